"""LLM post-training with MARA on TRL (extra ``[llm]``).

- ``mara_rl.llm.tasks``: the ``random_choice`` verifiable prompts ("1 or 2"), reward and metrics
  (pure Python);
- ``mara_rl.llm.tiny``: the tiny pre-trained reference model built locally and cached;
- ``mara_rl.llm.trainers``: older name of ``mara_rl.integrations.trl.trainers`` (the TRL trainers);
- ``mara_rl.llm.one_or_two``: the paper's "1 or 2" sweep behind ``mara llm one-or-two``.

Submodules are imported explicitly so that ``import mara_rl.llm`` loads neither torch nor TRL.
"""
