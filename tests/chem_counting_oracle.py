"""RDKit QED as an oracle that logs every molecule it is asked to score, plus fault injection
for the crash tests of ``mara chem run`` (``tests/test_chem_resume.py``).

``--objective chem_counting_oracle:make`` loads it inside the run's own process. Environment:

- ``CHEM_ORACLE_LOG``: file that gets one line per molecule, appended before it is scored, so
  the log counts every call the oracle was asked for, also those a kill cut short (appends are
  atomic, so worker processes of ``--oracle-workers`` share the file);
- ``CHEM_ORACLE_DELAY``: seconds each molecule takes to score (default 0), so that a test can
  kill a run while a batch is being scored;
- ``CHEM_KILL=<phase>:<n>``: the process SIGKILLs itself at the n-th (1-based) event of a phase:
  ``sample`` (as a batch starts sampling), ``score`` (inside the oracle, after logging the batch),
  ``write`` (half-way through writing a batch of ledger rows, leaving a torn row) or
  ``checkpoint`` (half-way through writing a checkpoint).
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections import Counter

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import QED

_events: Counter = Counter()


def _kill_at(phase: str) -> bool:
    """Whether this event of ``phase`` is the one ``CHEM_KILL`` names."""
    target = os.environ.get("CHEM_KILL", "")
    _events[phase] += 1
    return target == f"{phase}:{_events[phase]}"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class CountingQed:
    name = "counting_qed"
    cost = 1

    def __call__(self, smiles):
        line = "".join(f"{s}\n" for s in smiles).encode()
        fd = os.open(os.environ["CHEM_ORACLE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if _kill_at("score"):
            _die()
        time.sleep(float(os.environ.get("CHEM_ORACLE_DELAY", "0")) * len(smiles))
        return np.array([QED.qed(Chem.MolFromSmiles(s)) for s in smiles])


def _install_faults() -> None:
    from mara_rl.chem import rl
    from mara_rl.chem.model import SmilesRNN

    append, save, sample = rl.Ledger._append, torch.save, SmilesRNN.sample

    def torn_append(self, text):
        if not _kill_at("write"):
            return append(self, text)
        half = len(text) // 2
        with self.path.open("a", newline="") as handle:
            handle.write(text[:half] if text[half - 1] != "\n" else text[: half + 1])
        _die()

    def torn_save(obj, path, *args, **kwargs):
        if not _kill_at("checkpoint"):
            return save(obj, path, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer)
        with open(path, "wb") as handle:
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        _die()

    def killed_sample(self, *args, **kwargs):
        if _kill_at("sample"):
            _die()
        return sample(self, *args, **kwargs)

    rl.Ledger._append, torch.save, SmilesRNN.sample = torn_append, torn_save, killed_sample


def make() -> CountingQed:
    if os.environ.get("CHEM_KILL"):
        _events.clear()  # a forked run counts its own events, not its parent's
        _install_faults()
    return CountingQed()


def make_unpicklable() -> CountingQed:
    """The counting oracle holding a lambda: it cannot be sent to worker processes."""
    oracle = CountingQed()
    oracle.note = lambda: "not picklable"
    return oracle
