"""Test-wide setup: fake CPU devices, fast compilation, a shared compilation cache.

The device count must be fixed before JAX first touches a backend, so it is set here, at
collection time, before any test module imports run. The tests check numerics against
references at tolerances that do not depend on XLA's optimisation passes, so those are
mostly turned off (compiling dominates these tiny models' run time), and every compiled
program is cached on disk for the session: a test that trains twice, the other pytest
workers of the run, and the processes the tests start (which inherit the variables
below) compile each program once. A size limit turns on the cache's file lock, without
which two processes writing one entry while a third reads it could read half a file.
"""

import os
import pathlib
import tempfile

# One directory per pytest run, shared by its xdist workers (same run id).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_CACHE = (str(pathlib.Path(tempfile.gettempdir()) / f"hierjax-test-jax-cache-{_RUN}") if _RUN
          else tempfile.mkdtemp(prefix="hierjax-test-jax-cache-"))
os.environ.update({
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    "JAX_COMPILATION_CACHE_DIR": _CACHE,
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 << 30),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
})

import jax  # noqa: E402  (after the environment it reads)

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_compilation_cache_max_size", 8 << 30)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
