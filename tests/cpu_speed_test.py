"""The CPU-only compile options of the prediction path (issue 20): same outputs,
other backends untouched."""

import jax
import numpy as np

from heatpose_jax import from_config
from heatpose_jax.model import inference
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
