"""``mara diagnose``: the exact target of a KL-regularised objective over the answers a model produced.

- :mod:`mara_rl.diagnose.reading`: read and check rollout files (:func:`read_rollouts`);
- :mod:`mara_rl.diagnose.classes`: group each prompt's completions into answer classes;
- :mod:`mara_rl.diagnose.diagnosis`: per-prompt vanilla and MARA targets with the core's closed
  forms (:func:`diagnose`);
- :mod:`mara_rl.diagnose.report`: table, JSON and figure; :mod:`mara_rl.diagnose.commands`: the CLI.

Submodules are imported explicitly (they need pandas) so that ``mara --help`` stays fast.
"""
