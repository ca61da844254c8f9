"""Fixtures of the unit layer."""
import numpy as np
import pytest


def _fake_encoder(texts, batch_size, device, progress):
    """Deterministic stand-in for MiniLM in the stage tests (the real one: tests/integration/test_minilm.py)."""
    seeds = [sum(t.encode()) for t in texts]
    return np.stack([np.random.default_rng(s).standard_normal(384) for s in seeds]).astype(np.float32)


@pytest.fixture
def fake_encoder():
    """fake_encoder(texts, batch_size, device, progress) -> [len(texts), 384] float32, a function of each text."""
    return _fake_encoder
