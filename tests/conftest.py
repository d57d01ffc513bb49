"""Shared pytest set-up: a persistent XLA compilation cache and a float64 fixture."""
import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.fixture
def x64():
  """Runs the test body with 64-bit floats enabled (exact analytic oracles)."""
  with jax.enable_x64(True):
    yield
