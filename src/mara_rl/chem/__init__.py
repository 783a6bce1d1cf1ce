"""Chemical language models: a SMILES RNN prior and REINVENT-style RL with MARA.

Submodules: ``tokenizer`` (SMILES regex tokenizer and vocabulary), ``model`` (RNN prior with
batched sampling and exact log-likelihoods), ``data`` (MOSES SMILES from the ``molsets`` wheel),
``train_prior`` (``mara chem train-prior``), ``oracles`` (RDKit objectives), ``rl``
(augmented-likelihood RL, ``mara chem run``), ``compare`` (``mara chem compare``).
Only ``oracles`` and the metrics need RDKit; the prior and its training need only torch.
"""
