"""The persistent XLA compilation cache every test process uses (pytest workers and the scripts the
tests start in fresh processes): `DIFFJAX_COMPILATION_CACHE`, default ~/.cache/diffjax_xla."""
import os

import jax


def enable_compilation_cache():
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "DIFFJAX_COMPILATION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "diffjax_xla")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
