"""Full-width models are slow to build on 2 CPU cores: build each once per test session."""

import functools

import pytest

from hwd_tune.models import build_model


@functools.cache
def _full_width(name: str, num_classes: int):
    return build_model(name, num_classes)


@pytest.fixture(scope="session")
def full_width_model():
    """`full_width_model(name, num_classes=19)`: a shared, do-not-modify full-width model."""
    return lambda name, num_classes=19: _full_width(name, num_classes)
