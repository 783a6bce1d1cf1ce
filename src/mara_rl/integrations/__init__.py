"""Adapters to other RL engines, each loaded only through its own extra (``mara_rl.integrations.verl``: ``[verl]``)."""
