"""The CPU-only compile options of the prediction path and the train step
(issue 20): same outputs, other backends untouched."""

import jax
import numpy as np
import pytest

from conftest import one_device_mesh
from heatpose_jax import from_config
from heatpose_jax.model import inference
from heatpose_jax.training import train_step
from studies import benchmark

# The tiny FLIC cascade at 8x, batch 2: a small model with every kind of convolution.
CONFIG = benchmark.model_config("flic", pool=8, dtype="float32", batch_size=2, tiny=True)


def _assert_close(outs, atol):
  for a, b in zip(*map(jax.tree.leaves, outs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def test_prediction_compile_options_are_cpu_only_and_keep_the_outputs(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert inference.compiler_options("gpu") is None and inference.compiler_options("tpu") is None
  options = inference.compiler_options("cpu")
  assert options == inference.CPU_COMPILER_OPTIONS
  monkeypatch.setenv("XLA_FLAGS", f"--{inference.YNN_FUSION_FLAG}=")
  assert inference.compiler_options("cpu") is None  # the user's own choice wins

  params = benchmark.random_params(from_config.abstract_params(CONFIG, one_device_mesh()))
  x = np.random.default_rng(0).integers(0, 256, (2, *CONFIG.input_hw, 3), np.uint8)
  fn = benchmark.predict_joints(from_config.model(CONFIG))
  _assert_close([jax.jit(fn, compiler_options=o)(params, x) for o in (None, options)], 1e-4)


def test_the_train_step_compiles_with_the_same_options_and_the_same_update(monkeypatch):
  mesh = one_device_mesh()
  state = benchmark.random_state(from_config.abstract_state(CONFIG, mesh), 0)
  num_joints = from_config.skeleton(CONFIG).num_joints
  batch = benchmark.synthetic_batch(2, tuple(CONFIG.input_hw), num_joints, 0)
  key = jax.random.key(0)
  step = from_config.train_step(CONFIG, "joint", mesh, donate=False)
  default = jax.jit(step.__wrapped__)  # the same step, the backend's default kernels
  _assert_close([f(state, batch, key) for f in (step, default)], 1e-5)

  # The options reach the compiler: a value XLA refuses makes the step fail there.
  bad = {inference.YNN_FUSION_FLAG: "NOT_A_FUSION_TYPE"}
  monkeypatch.setattr(inference, "compiler_options", lambda backend=None: bad)
  train_step.make_train_step.cache_clear()
  try:
    with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
      from_config.train_step(CONFIG, "joint", mesh, donate=False).lower(state, batch, key).compile()
  finally:
    train_step.make_train_step.cache_clear()
