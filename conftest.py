"""pytest set-up shared by every test: 8 fake CPU devices, fast compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The fusion emitters roughly double XLA:CPU compile times, which dominate the tests.
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}"
  ).strip()

import jax  # noqa: E402

# Tests are dominated by compile time, not run time.
jax.config.update("jax_disable_most_optimizations", True)
