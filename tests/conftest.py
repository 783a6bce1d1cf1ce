"""Fixtures shared by several test files (a test file's own fixture of the same name takes precedence)."""

import pytest


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The tiny untrained Llama and its tokenizer, saved once: a model folder for TRL's trainers."""
    pytest.importorskip("transformers")
    from mara_rl.llm.tiny import tiny_untrained_model

    path = tmp_path_factory.mktemp("tiny-untrained")
    model, tokenizer = tiny_untrained_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
