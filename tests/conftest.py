"""Test-wide setup: fake CPU devices, fast compilation, a shared compilation cache.

The device count must be fixed before JAX first touches a backend, so it is set here, at
collection time, before any test module imports run. The tests check numerics against
references at tolerances that do not depend on XLA's optimisation passes, so those are
mostly turned off (compiling dominates these tiny models' run time), and every compiled
program is cached on disk for the session: a test that trains twice, and the processes
the tests start (which inherit the variables below), compile each program once.
"""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="hierjax-test-jax-cache-")
os.environ.update({
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    "JAX_COMPILATION_CACHE_DIR": _CACHE,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
})

import jax  # noqa: E402  (after the environment it reads)

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
