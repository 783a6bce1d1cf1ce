"""``mara diagnose --html``: time to first render of the report in headless chromium.

For ``--prompts`` prompts (``--per-prompt`` completions each, 2-6 answers per prompt), writes the
report and, as the baseline, a static HTML table of the same per-prompt rows (pandas ``to_html``,
no script). Both are loaded in the same browser session; the figures are milliseconds from the start
of navigation to the table on screen (the report: the end of its first render; the static page: its
``domContentLoaded``), and then one click sort of the report's table over every prompt. Best of
``--repeats``. Needs chromium and chromedriver (``make browser``) and selenium.

    python benchmarks/bench_html_report.py                  # 1,000 prompts
    python benchmarks/bench_html_report.py --prompts 10000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _browser import start_browser  # noqa: E402

from mara_rl.diagnose.diagnosis import diagnose  # noqa: E402
from mara_rl.diagnose.html import write_html  # noqa: E402


def rollouts(num_prompts: int, per_prompt: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    prompt = np.repeat(np.arange(num_prompts), per_prompt)
    answers = rng.integers(2, 7, num_prompts)[prompt]
    answer = (rng.random(prompt.size) * answers).astype(int)
    reward = (np.sin(answer * 7.0 + prompt) > 0).astype(float)
    ref = -((answer * 3 + prompt) % 11).astype(float)
    return pd.DataFrame({"prompt": [f"Prompt {p}: pick one" for p in prompt], "completion": [f"answer {a}" for a in answer],
                         "reward": reward, "ref_logprob": ref})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    result = diagnose(rollouts(args.prompts, args.per_prompt, 0), 0.01, tau=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        report, static = Path(tmp) / "report.html", Path(tmp) / "static.html"
        with contextlib.redirect_stdout(io.StringIO()):
            write_html([result], report)
        static.write_text(f"<!DOCTYPE html><html><body>{result.prompts.to_html()}</body></html>")
        size = report.stat().st_size
        browser = start_browser()
        try:
            first, baseline, sort = [], [], []
            for _ in range(args.repeats):
                browser.get(static.as_uri())
                baseline.append(browser.execute_script(
                    "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd;"))
                browser.get(report.as_uri())
                rows = browser.execute_script("return document.querySelectorAll('#prompts tbody tr').length;")
                assert rows == args.prompts, rows
                first.append(browser.execute_script("return window.maraReport.firstRenderMs;"))
                sort.append(browser.execute_script(
                    "const t = performance.now(); document.querySelector('#prompts th[data-key=\"mara_effective_good\"]').click();"
                    " return performance.now() - t;"))
        finally:
            browser.quit()
    print(f"{args.prompts} prompts, {len(result.classes)} classes, report {size / 1e6:.1f} MB")
    print(f"report first render: {min(first):.0f} ms from navigation start (static table baseline: {min(baseline):.0f} ms, "
          f"ratio {min(first) / min(baseline):.2f})")
    print(f"sort by a column, every prompt re-rendered: {min(sort):.0f} ms")


if __name__ == "__main__":
    main()
