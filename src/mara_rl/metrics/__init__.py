"""Diversity and coverage measures: distributions, text (``metrics.text``) and molecules
(``metrics.molecules``, needs RDKit). Submodules are imported explicitly so that
``import mara_rl.metrics`` stays light."""
