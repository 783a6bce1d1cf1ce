"""LLM post-training with MARA on TRL (extra ``[llm]``).

- ``mara_rl.llm.tasks``: the ``random_choice`` verifiable prompts ("1 or 2"), reward and metrics
  (pure Python);
- ``mara_rl.llm.tiny``: the tiny pre-trained reference model built locally and cached;
- ``mara_rl.llm.trainers``: older name of ``mara_rl.integrations.trl.trainers`` (the TRL trainers);
- ``mara_rl.llm.one_or_two``: the paper's "1 or 2" sweep behind ``mara llm one-or-two``;
- ``mara_rl.llm.creative_task``: open-ended prompt families, answer criteria and the reference corpus
  (pure Python);
- ``mara_rl.llm.reward_model``: learned reward models (all-MiniLM-L6-v2 + trained head), cached;
- ``mara_rl.llm.creative``: the reward-model sweep behind ``mara llm creative``;
- ``mara_rl.llm.sweep``: resumable, parallel sweeps of runs, shared by both commands.

Submodules are imported explicitly so that ``import mara_rl.llm`` loads neither torch nor TRL.
"""
