"""Test-wide setup: fake CPU devices for the multi-device tests.

The device count must be fixed before JAX first touches a backend, so it is set here,
at collection time, before any test module imports run.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")
