"""Shared pytest set-up: a persistent XLA compilation cache and a float64 fixture."""
import os

import jax
import pytest

_CACHE_DIR = os.environ.get(
    "DIFFJAX_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "diffjax_xla"))
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@pytest.fixture
def x64():
  """Runs the test body with 64-bit floats enabled (exact analytic oracles)."""
  with jax.enable_x64(True):
    yield
