"use strict";
// The closed-form targets of mara_rl.targets for one outcome set, step for step the same
// arithmetic (max-subtraction before dividing by beta, the forward multiplier found by the same
// bracketed bisection in log space, the same verdict rule), so the page agrees with the core to
// rounding. Each function mirrors the Python function named in its comment.
const MaraTargets = (() => {
  const BISECTION_TOL = 1e-13;         // targets._BISECTION_TOL
  const MULTIMODAL_MIN_EFFECTIVE = 1.8; // targets.MULTIMODAL_MIN_EFFECTIVE
  const PROB_SUM_TOL = 1e-6;           // targets._PROB_SUM_TOL

  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const max = (xs) => xs.reduce((a, b) => (b > a ? b : a), -Infinity);

  // _groups.Segments.logsumexp: shift by the (finite) peak, -inf when every value is -inf.
  function logsumexp(xs) {
    const peak = max(xs);
    const shift = Number.isFinite(peak) ? peak : 0;
    return shift + Math.log(sum(xs.map((x) => Math.exp(x - shift))));
  }

  // numpy.logaddexp
  function logaddexp(x, y) {
    if (x === y) return x + Math.LN2;
    const d = x - y;
    if (d > 0) return x + Math.log1p(Math.exp(-d));
    if (d <= 0) return y + Math.log1p(Math.exp(d));
    return x + y;
  }

  function checkBeta(beta) {
    if (!(beta > 0) || !Number.isFinite(beta)) throw new Error(`beta must be a finite number > 0, got ${beta}`);
    return beta;
  }

  // targets._prepare for one group: checks, then the reference normalised over the outcomes.
  function prepare(rewards, refLogprobs) {
    if (rewards.length === 0) throw new Error("rewards must not be empty");
    if (rewards.length !== refLogprobs.length) {
      throw new Error(`rewards and reference must have the same length, got ${rewards.length} and ${refLogprobs.length}`);
    }
    rewards.forEach((r, i) => { if (!Number.isFinite(r)) throw new Error(`reward ${i} is not a finite number`); });
    refLogprobs.forEach((l, i) => { if (Number.isNaN(l) || l === Infinity) throw new Error(`reference log-prob ${i} must not be NaN or +inf`); });
    const norm = logsumexp(refLogprobs);
    if (norm === -Infinity) throw new Error("the reference must give some outcome positive probability");
    return refLogprobs.map((l) => l - norm);
  }

  // Segments.normalize after the softmax of targets._softmax
  function softmax(logits) {
    const norm = logsumexp(logits);
    const probs = logits.map((x) => Math.exp(x - norm));
    const total = sum(probs);
    return probs.map((p) => p / total);
  }

  // targets._gibbs with entropy_coef = 0: subtract the top supported reward before dividing by beta.
  function gibbs(rewards, refLogprobs, beta) {
    const supported = refLogprobs.map((l) => l !== -Infinity);
    const top = max(rewards.filter((_, i) => supported[i]));
    const logits = rewards.map((r, i) => (supported[i] ? refLogprobs[i] + (r - top) / beta : -Infinity));
    return softmax(logits);
  }

  // targets._forward_solve for one group: probabilities and the multiplier Lambda.
  function forwardSolve(rewards, logWeights, beta) {
    const on = logWeights.map((l) => l !== -Infinity);
    const supportMax = max(rewards.filter((_, i) => on[i]));
    const logGaps = rewards.map((r, i) => (on[i] ? Math.log(supportMax - r) : Infinity));
    const logBeta = Math.log(beta);
    const logBetaW = logWeights.map((l, i) => (on[i] ? logBeta + l : -Infinity));
    const logTerms = (logT) => logBetaW.map((lw, i) => (on[i] ? lw - logaddexp(logT, logGaps[i]) : -Infinity));

    let lo = logsumexp(logBetaW.map((lw, i) => (on[i] && logGaps[i] === -Infinity ? lw : -Infinity)));
    let hi = logsumexp(logBetaW);
    for (let step = 0; step < 200; step++) {
      if (hi - lo <= BISECTION_TOL * Math.max(1, Math.abs(lo))) break;
      const mid = 0.5 * (lo + hi);
      if (logsumexp(logTerms(mid)) > 0) lo = mid; else hi = mid;
    }
    let logT = 0.5 * (lo + hi);

    // The best reward may lie off the reference support; then Lambda may sit at it.
    const offMax = max(rewards.filter((_, i) => !on[i]));
    let offWins = offMax > supportMax;
    if (offWins) {
      const logTOff = Math.log(offMax - supportMax);
      offWins = logsumexp(logTerms(logTOff)) < 0;
      if (offWins) logT = logTOff;
    }
    let probs = logTerms(logT).map(Math.exp);
    if (offWins) {
      const winners = rewards.map((r, i) => !on[i] && r === offMax);
      const leftover = 1 - sum(probs);
      const share = leftover / Math.max(1, winners.filter(Boolean).length);
      probs = probs.map((p, i) => (winners[i] ? share : p));
    }
    const total = sum(probs);
    if (!(Math.abs(total - 1) < 1e-6)) throw new Error(`forward-KL root finding did not converge (mass ${total})`);
    return { probs: probs.map((p) => p / total), multiplier: supportMax + Math.exp(logT) };
  }

  // The reference normalised over the outcomes (targets._prepare), as probabilities.
  const reference = (refLogprobs) => softmax(refLogprobs);

  function reverseTarget(rewards, refLogprobs, beta) {
    return gibbs(rewards, prepare(rewards, refLogprobs), checkBeta(beta));
  }

  function forwardTarget(rewards, refLogprobs, beta) {
    return forwardSolve(rewards, prepare(rewards, refLogprobs), checkBeta(beta));
  }

  // augment.mara_rewards(kl="forward") for one group: every good outcome takes the anchor's reward
  // and reference log-prob; the anchor is the most reference-likely good outcome (ties: higher reward,
  // then lower index).
  function anchored(rewards, refLogprobs, tau) {
    let anchor = -1;
    rewards.forEach((r, i) => {
      if (!(r >= tau)) return;
      if (refLogprobs[i] === -Infinity) {
        throw new Error(`outcome ${i} reaches tau but has reference probability 0: MARA needs a finite reference log-prob for every good outcome`);
      }
      if (anchor < 0 || refLogprobs[i] > refLogprobs[anchor] ||
          (refLogprobs[i] === refLogprobs[anchor] && r > rewards[anchor])) anchor = i;
    });
    if (anchor < 0) return { rewards, refLogprobs, anchor };
    return {
      rewards: rewards.map((r) => (r >= tau ? rewards[anchor] : r)),
      refLogprobs: refLogprobs.map((l, i) => (rewards[i] >= tau ? refLogprobs[anchor] : l)),
      anchor,
    };
  }

  // targets.mara_target
  function maraTarget(rewards, refLogprobs, beta, tau, kl) {
    if (!Number.isFinite(tau)) throw new Error(`tau must be a finite number, got ${tau}`);
    const ref = prepare(rewards, refLogprobs);
    checkBeta(beta);
    const aug = anchored(rewards, ref, tau);
    return kl === "reverse" ? gibbs(aug.rewards, aug.refLogprobs, beta) : forwardSolve(aug.rewards, aug.refLogprobs, beta).probs;
  }

  // targets.summarize_targets for one group
  function summarize(probs, rewards, tau) {
    const total = sum(probs);
    if (Math.abs(total - 1) > PROB_SUM_TOL) throw new Error(`probs must sum to 1, got ${total}`);
    const good = rewards.map((r) => r >= tau);
    const numGood = good.filter(Boolean).length;
    const goodP = probs.map((p, i) => (good[i] ? p : 0));
    const mass = sum(goodP);
    const plogp = (p) => (p > 0 ? p * Math.log(p) : 0);
    const goodEntropy = -sum(goodP.map((p) => plogp(p / mass)));
    const entropy = -sum(probs.map(plogp));
    const topGoodShare = mass > 0 ? max(goodP) / mass : 0;
    const hasMass = numGood > 0 && mass > 0;
    const effectiveGood = hasMass ? Math.exp(Math.max(goodEntropy, 0)) : 0;
    const spread = numGood >= 2 && hasMass ? (effectiveGood - 1) / Math.max(numGood - 1, 1) : 0;
    const multimodal = numGood >= 2 && effectiveGood >= MULTIMODAL_MIN_EFFECTIVE;
    return { massAboveTau: mass, numGood, effectiveGood, topGoodShare, spread, entropy: Math.max(entropy, 0), multimodal };
  }

  // Python rounds an exact tie to even; toFixed and toExponential round it away from zero. A tie is
  // read off the exact decimal expansion (100 digits hold every double this page formats).
  const isTie = (digits, keep) => digits[keep] === "5" && /^0*$/.test(digits.slice(keep + 1)) && Number(digits[keep - 1] ?? 0) % 2 === 0;

  // Python's format(x, ".Nf")
  function fixed(x, digits) {
    const sign = x < 0 || Object.is(x, -0) ? "-" : "";
    const a = Math.abs(x);
    const [whole, frac] = a.toFixed(100).split(".");
    if (isTie(whole + frac, whole.length + digits)) return sign + (digits ? `${whole}.${frac.slice(0, digits)}` : whole);
    return sign + a.toFixed(digits);
  }

  // Python's format(x, "g"): six significant digits, trailing zeros dropped.
  function formatG(x) {
    if (x === 0) return Object.is(x, -0) ? "-0" : "0";
    if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
    const sign = x < 0 ? "-" : "";
    const a = Math.abs(x);
    const [exactMantissa, exactExponent] = a.toExponential(100).split("e");
    const exactDigits = exactMantissa.replace(".", "");
    let [mantissa, exponentText] = a.toExponential(5).split("e");
    if (isTie(exactDigits, 6)) [mantissa, exponentText] = [`${exactDigits[0]}.${exactDigits.slice(1, 6)}`, exactExponent];
    const exponent = Number(exponentText);
    const digits = mantissa.replace(".", "");
    const strip = (text) => (text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text);
    if (exponent >= -4 && exponent < 6) {
      const text = exponent >= 0
        ? `${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`
        : `0.${"0".repeat(-exponent - 1)}${digits}`;
      return sign + strip(text);
    }
    return `${sign}${strip(mantissa)}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }

  const percent = (x) => `${fixed(x * 100, 1)}%`;

  // targets.describe_target's sentence
  function describe(probs, rewards, tau) {
    const s = summarize(probs, rewards, tau);
    let sentence;
    if (s.numGood === 0) {
      sentence = `No outcome reaches tau=${formatG(tau)}: the target has no good mode to keep.`;
    } else if (s.numGood === 1) {
      sentence = `Only one outcome reaches tau=${formatG(tau)}; it holds ${percent(s.massAboveTau)} of the target.`;
    } else {
      const verdict = s.multimodal ? "Multimodal" : "Unimodal";
      sentence = `${verdict} over R >= ${formatG(tau)}: ${percent(s.massAboveTau)} of the mass is on the ${s.numGood} good ` +
        `outcomes, the top one holds ${percent(s.topGoodShare)} of it (effective number ${fixed(s.effectiveGood, 2)} of ${s.numGood}).`;
    }
    return { ...s, sentence };
  }

  // Every target and summary of one problem; MARA in the given KL direction.
  function compute(rewards, refLogprobs, beta, tau, kl) {
    const reverse = reverseTarget(rewards, refLogprobs, beta);
    const fwd = forwardTarget(rewards, refLogprobs, beta);
    const out = {
      reverse, forward: fwd.probs, forwardMultiplier: fwd.multiplier,
      summaries: { reverse: describe(reverse, rewards, tau), forward: describe(fwd.probs, rewards, tau) },
      mara: null, maraError: null,
    };
    try {
      out.mara = maraTarget(rewards, refLogprobs, beta, tau, kl);
      out.summaries.mara = describe(out.mara, rewards, tau);
    } catch (err) {
      out.maraError = err.message;
    }
    return out;
  }

  return { logsumexp, reference, reverseTarget, forwardTarget, maraTarget, summarize, describe, compute, formatG, fixed };
})();
