"""The CPU-only compile options of the prediction path and the train step
(issue 20): same outputs, other backends untouched."""

import jax
import numpy as np
import pytest

from heatpose_jax import from_config
from heatpose_jax.model import inference
from heatpose_jax.training import train_step
from studies import benchmark


def test_prediction_compile_options_are_cpu_only_and_keep_the_outputs(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert inference.compiler_options("gpu") is None and inference.compiler_options("tpu") is None
  options = inference.compiler_options("cpu")
  assert options == inference.CPU_COMPILER_OPTIONS
  monkeypatch.setenv("XLA_FLAGS", f"--{inference.YNN_FUSION_FLAG}=")
  assert inference.compiler_options("cpu") is None  # the user's own choice wins

  config = benchmark.model_config("flic", pool=8, dtype="float32", batch_size=2, tiny=True)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  model = from_config.model(config)
  params = benchmark.random_params(from_config.abstract_params(config, mesh))
  x = np.random.default_rng(0).integers(0, 256, (2, *config.input_hw, 3), np.uint8)
  fn = benchmark.predict_joints(model)
  outs = [jax.jit(fn, compiler_options=o)(params, x) for o in (None, options)]
  for a, b in zip(*map(jax.tree.leaves, outs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_train_step_compiles_with_the_same_options_and_the_same_update(monkeypatch):
  config = benchmark.model_config("flic", pool=8, dtype="float32", batch_size=2, tiny=True)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  state = benchmark.random_state(from_config.abstract_state(config, mesh), 0)
  num_joints = from_config.skeleton(config).num_joints
  batch = benchmark.synthetic_batch(2, tuple(config.input_hw), num_joints, 0)
  key = jax.random.key(0)
  step = from_config.train_step(config, "joint", mesh, donate=False)
  default = jax.jit(step.__wrapped__)  # the same step, the backend's default kernels
  outs = [f(state, batch, key) for f in (step, default)]
  for a, b in zip(*map(jax.tree.leaves, outs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  # The options reach the compiler: a value XLA refuses makes the step fail there.
  bad = {inference.YNN_FUSION_FLAG: "NOT_A_FUSION_TYPE"}
  monkeypatch.setattr(inference, "compiler_options", lambda backend=None: bad)
  train_step.make_train_step.cache_clear()
  try:
    with pytest.raises(Exception, match="NOT_A_FUSION_TYPE"):
      from_config.train_step(config, "joint", mesh, donate=False).lower(state, batch, key).compile()
  finally:
    train_step.make_train_step.cache_clear()
