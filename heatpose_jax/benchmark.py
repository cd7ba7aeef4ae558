"""Speed of the models on the device: forward time per image and training throughput.

Two measurements, each compiled once and timed warm with inputs already on the
device:

* `forward_ms` / `forward_stats`: milliseconds per image of the coarse model
  (`Cascade.coarse_heatmaps`) or the whole cascade at a given batch size; the
  fine model's time is cascade − coarse (the paper's Table 2).
* `train_stats` / `train_images_per_second`: images per second of the real
  `train.train_step` of a config (device augmentation and targets, donation, a
  1-D `Mesh` over all devices, batch sharded `P('data')`) on random uint8
  batches in design.md's batch layout: what training gets, minus the input
  pipeline.

FLOPs come from XLA's cost analysis of the same lowered function (before
optimization, as in `model_stats`), so achieved TFLOP/s = FLOPs × rate.

`default_cases`, `run_case` and `format_markdown` are the pieces that
`python -m experiments.benchmark` strings together.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import input_pipeline, models, train
from heatpose_jax import joints as joints_lib

PARTS = ("coarse", "cascade")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# --- helpers -------------------------------------------------------------------


def random_params(
  model: models.Cascade | models.StandardCascade, input_hw: tuple[int, int], seed: int = 0
):
  """Random float32 parameters of `model` without compiling its `init`.

  Kernels are LeCun-normal (std 1/√fan-in, fan-in = all axes but the last),
  vectors zero: activations stay in range in any dtype. The values do not
  change the work a forward or training step does.

  Args:
    model: the cascade.
    input_hw: input height, width (the parameter shapes do not depend on it,
      but `init` traces one forward pass).
    seed: numpy seed.

  Returns:
    The parameter tree (the `'params'` collection) as host numpy arrays.
  """
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  rng = np.random.default_rng(seed)

  def one(s):
    if len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    fan_in = math.prod(s.shape[:-1])
    return (rng.standard_normal(s.shape) / math.sqrt(fan_in)).astype(np.float32)

  return jax.tree.map(one, shapes)


def with_dtype(
  model: models.Cascade | models.StandardCascade, dtype: jnp.dtype
) -> models.Cascade | models.StandardCascade:
  """`model` with both sub-models computing in `dtype` (parameters stay float32)."""
  if model.coarse.dtype == dtype and model.fine.dtype == dtype:
    return model
  return model.clone(coarse=model.coarse.clone(dtype=dtype), fine=model.fine.clone(dtype=dtype))


def _cost_flops(cost) -> float:
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per device program.
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else float("nan")


def lowered_flops(
  lowered: jax.stages.Lowered, compiled: jax.stages.Compiled | None = None
) -> float:
  """FLOPs from XLA's cost analysis of the lowered (pre-optimization) module.

  NaN where the backend has none (GPU on jax 0.11): the compiled GPU module's own
  analysis does not count the cuDNN convolutions (it reported 0.3 GFLOP for the
  116-GFLOP MPII train step), so it is not used; `python -m
  experiments.model_stats` gives the counts, which do not depend on the device.
  `compiled` is accepted for the CPU, where its count is complete.
  """
  try:
    flops = _cost_flops(lowered.cost_analysis())
  except Exception:  # noqa: BLE001 - not every backend implements it.
    flops = float("nan")
  if flops != flops and compiled is not None and jax.default_backend() == "cpu":
    flops = _cost_flops(compiled.cost_analysis())
  return flops


def _temp_bytes(compiled: jax.stages.Compiled) -> float:
  """Scratch memory of a compiled executable, NaN where the backend does not say."""
  try:
    return float(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend implements it.
    return float("nan")


def device_info() -> dict[str, Any]:
  """The devices and library versions a result was measured with."""
  import flax

  d = jax.devices()[0]
  return {
    "device_kind": d.device_kind,
    "platform": d.platform,
    "num_devices": jax.device_count(),
    "jax": jax.__version__,
    "flax": flax.__version__,
  }


# --- forward ---------------------------------------------------------------------


def lower_forward(
  model: models.Cascade | models.StandardCascade,
  input_hw: tuple[int, int],
  batch_size: int,
  *,
  part: str,
  dtype: jnp.dtype = jnp.float32,
) -> jax.stages.Lowered:
  """The jitted forward of `part` lowered for float32 params and images (no compile).

  Args:
    model: the cascade (its own dtype is overridden by `dtype`).
    input_hw: input height, width.
    batch_size: images per call.
    part: 'coarse' (`model.coarse_heatmaps`) or 'cascade' (the full forward:
      coarse model, argmax, crops, fine model, decoding).
    dtype: compute dtype.
  """
  if part not in PARTS:
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")
  m = with_dtype(model, dtype)
  if part == "coarse":
    fn = lambda p, x: m.apply({"params": p}, x, train=False, method=m.coarse_heatmaps)
  else:
    fn = lambda p, x: m.apply({"params": p}, x, train=False)
  x = jax.ShapeDtypeStruct((batch_size, *input_hw, 3), jnp.float32)
  params = jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)["params"]
  return jax.jit(fn).lower(params, x)


def time_forward(
  compiled: jax.stages.Compiled,
  params,
  input_hw: tuple[int, int],
  batch_size: int,
  *,
  iters: int = 20,
  warmup: int = 3,
  num_inputs: int = 3,
  seed: int = 0,
) -> float:
  """Median seconds per call of a compiled forward (`lower_forward`).

  Inputs are random images in [0, 1], placed on the default device before timing
  and rotated among `num_inputs` buffers so that repeated calls do not read a
  cached input. Each call is timed on the host clock around
  `jax.block_until_ready`.
  """
  params = jax.device_put(params)
  rng = np.random.default_rng(seed)
  xs = [
    jax.device_put(rng.random((batch_size, *input_hw, 3), np.float32))
    for _ in range(max(1, num_inputs))
  ]
  for i in range(warmup):
    jax.block_until_ready(compiled(params, xs[i % len(xs)]))
  times = []
  for i in range(max(1, iters)):
    x = xs[i % len(xs)]
    t = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _forward_result(flops: float, compile_s: float, call_s: float, batch_size: int, temp: float):
  gflop = flops / batch_size / 1e9
  return {
    "ms_per_image": 1e3 * call_s / batch_size,
    "ms_per_call": 1e3 * call_s,
    "gflop_per_image": gflop,
    "tflops": gflop * batch_size / call_s / 1e3,
    "compile_s": compile_s,
    "temp_gib": temp / 2**30,
  }


def forward_stats(
  model: models.Cascade | models.StandardCascade,
  params,
  input_hw: tuple[int, int],
  batch_size: int,
  *,
  part: str,
  dtype: jnp.dtype = jnp.float32,
  iters: int = 20,
  warmup: int = 3,
) -> dict[str, float]:
  """Compiles (once) and times the forward pass of the coarse model or the cascade.

  Args:
    model, input_hw, batch_size, part, dtype: see `lower_forward`.
    params: the model's `'params'` collection (float32, host or device).
    iters, warmup: see `time_forward`.

  Returns:
    dict: ms_per_image (median call time / batch_size), ms_per_call,
    gflop_per_image (XLA cost analysis), tflops (achieved), compile_s (lowering
    and compilation), temp_gib (the executable's scratch memory).
  """
  t0 = time.perf_counter()
  lowered = lower_forward(model, input_hw, batch_size, part=part, dtype=dtype)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  call_s = time_forward(compiled, params, input_hw, batch_size, iters=iters, warmup=warmup)
  return _forward_result(
    lowered_flops(lowered, compiled), compile_s, call_s, batch_size, _temp_bytes(compiled)
  )


def forward_ms(
  model: models.Cascade | models.StandardCascade,
  params,
  input_hw: tuple[int, int],
  batch_size: int,
  *,
  part: str,
  dtype: jnp.dtype = jnp.float32,
  iters: int = 20,
  warmup: int = 3,
) -> float:
  """Compiled, warm milliseconds per image of the forward pass (see `forward_stats`).

  The fine model's time is `forward_ms(..., part='cascade') - forward_ms(..., part='coarse')`.
  """
  return forward_stats(
    model, params, input_hw, batch_size, part=part, dtype=dtype, iters=iters, warmup=warmup
  )["ms_per_image"]


# --- training --------------------------------------------------------------------


def synthetic_batch(
  batch_size: int, input_hw: tuple[int, int], num_joints: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """A random host batch in design.md's layout: uint8 noise images, joints inside
  the central part of the canvas, all annotated and visible."""
  rng = np.random.default_rng(seed)
  h, w = input_hw
  b, j = batch_size, num_joints
  joints = np.stack(
    [rng.uniform(0.25 * w, 0.75 * w, (b, j)), rng.uniform(0.2 * h, 0.8 * h, (b, j))], -1
  )
  box = np.array([0.35 * w, 0.3 * h, 0.65 * w, 0.7 * h], np.float32)
  eye = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
  return {
    "image": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
    "joints": joints.astype(np.float32),
    "joints_valid": np.ones((b, j), np.float32),
    "joints_visible": np.ones((b, j), np.float32),
    "head_size": np.full((b,), 0.1 * h, np.float32),
    "torso_size": np.full((b,), 0.3 * h, np.float32),
    "torso_box": np.tile(box, (b, 1)),
    "canvas_to_image": np.tile(eye, (b, 1, 1)),
    "index": np.arange(b, dtype=np.int32),
    "_mask": np.ones((b,), bool),
  }


@dataclasses.dataclass
class TrainSetup:
  """What `lower_train` built, for `time_train` to make the inputs of."""

  model: models.Cascade | models.StandardCascade
  optimizer: Any
  mesh: Mesh
  input_hw: tuple[int, int]
  num_joints: int
  batch_size: int


def lower_train(
  config: ml_collections.ConfigDict, *, phase: str, dtype: str, batch_size: int
) -> tuple[jax.stages.Lowered, TrainSetup]:
  """Lowers the jitted `train.train_step` exactly as `train_and_evaluate` jits it.

  `train.build_model`, `train.make_optimizer` and the same static arguments from
  the config; replicated state (donated), the batch sharded over a 1-D
  `Mesh(jax.devices(), ('data',))`.

  Args:
    config: a training config (`heatpose_jax/configs`); `dtype` and
      `batch_size` override its fields.
    phase: 'coarse', 'fine' or 'joint'.
    dtype: 'float32' or 'bfloat16'.
    batch_size: global batch; must divide by the number of devices.
  """
  if phase not in train.PHASES:
    raise ValueError(f"phase must be one of {train.PHASES}, got {phase!r}")
  n_dev = jax.device_count()
  if batch_size % n_dev:
    raise ValueError(f"batch_size={batch_size} must divide by the {n_dev} devices")
  config = ml_collections.ConfigDict(config.to_dict())
  config.dtype = dtype
  config.batch_size = batch_size
  skeleton = joints_lib.get_skeleton(config.dataset)
  model = train.build_model(config)
  input_hw = tuple(config.input_hw)
  optimizer, schedule = train.make_optimizer(config, train.phase_bounds(config))
  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec("data"))

  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  state = jax.eval_shape(
    lambda p: train.TrainState(jnp.zeros((), jnp.int32), p, optimizer.init(p)), params
  )
  batch = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
    synthetic_batch(batch_size, input_hw, skeleton.num_joints),
  )
  key = jax.eval_shape(lambda: jax.random.key(0))
  fn = train.step_function(config, model, optimizer, schedule, phase)
  jitted = jax.jit(
    fn,
    in_shardings=(replicated, data, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )
  setup = TrainSetup(model, optimizer, mesh, input_hw, skeleton.num_joints, batch_size)
  return jitted.lower(state, batch, key), setup


def time_train(
  compiled: jax.stages.Compiled,
  setup: TrainSetup,
  *,
  steps: int = 10,
  repeats: int = 3,
  warmup: int = 2,
  seed: int = 0,
) -> tuple[float, float]:
  """Median seconds per step of a compiled train step (`lower_train`), and the last loss.

  The state starts from `random_params` and a fresh optimizer state; one random
  batch (`synthetic_batch`) stays on the device. Steps are dispatched back to
  back, as in training, and each window's clock stops when its last state is
  ready; the median of `repeats` windows of `steps` steps counts.
  """
  replicated = NamedSharding(setup.mesh, PartitionSpec())
  params = jax.device_put(random_params(setup.model, setup.input_hw, seed), replicated)
  opt_state = jax.jit(setup.optimizer.init, out_shardings=replicated)(params)
  state = train.TrainState(jax.device_put(jnp.zeros((), jnp.int32), replicated), params, opt_state)
  del params, opt_state
  batch = input_pipeline.to_global_array(
    synthetic_batch(setup.batch_size, setup.input_hw, setup.num_joints, seed), setup.mesh
  )
  key = jax.device_put(jax.random.key(seed), replicated)
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, batch, key)
  jax.block_until_ready(state)
  windows = []
  for _ in range(max(1, repeats)):
    t = time.perf_counter()
    for _ in range(max(1, steps)):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(state)
    windows.append((time.perf_counter() - t) / max(1, steps))
  return statistics.median(windows), float(jax.device_get(metrics["loss"]))


def _train_result(flops, compile_s, step_s, loss, batch_size, temp):
  gflop = flops / batch_size / 1e9
  return {
    "images_per_s": batch_size / step_s,
    "step_ms": 1e3 * step_s,
    "gflop_per_image": gflop,
    "tflops": gflop * batch_size / step_s / 1e3,
    "compile_s": compile_s,
    "temp_gib": temp / 2**30,
    "loss": loss,
  }


def train_stats(
  config: ml_collections.ConfigDict,
  *,
  phase: str,
  dtype: str,
  batch_size: int,
  steps: int = 10,
  repeats: int = 3,
  warmup: int = 2,
) -> dict[str, float]:
  """Compiles (once) and times the real jitted `train.train_step` of `config`.

  Args:
    config, phase, dtype, batch_size: see `lower_train`.
    steps, repeats, warmup: see `time_train`.

  Returns:
    dict: images_per_s, step_ms, gflop_per_image (the whole step: augmentation,
    targets, forward, backward, optimizer), tflops (achieved), compile_s,
    temp_gib, loss (of the last step; finite when the step is sane).
  """
  t0 = time.perf_counter()
  lowered, setup = lower_train(config, phase=phase, dtype=dtype, batch_size=batch_size)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  step_s, loss = time_train(compiled, setup, steps=steps, repeats=repeats, warmup=warmup)
  return _train_result(
    lowered_flops(lowered, compiled), compile_s, step_s, loss, batch_size, _temp_bytes(compiled)
  )


def train_images_per_second(
  config: ml_collections.ConfigDict,
  *,
  phase: str,
  dtype: str,
  batch_size: int,
  steps: int = 10,
) -> float:
  """Training images per second of `config`'s real train step (see `train_stats`)."""
  return train_stats(config, phase=phase, dtype=dtype, batch_size=batch_size, steps=steps)[
    "images_per_s"
  ]


# --- the benchmark's cases ---------------------------------------------------------


def model_config(name: str, *, pool: int, tiny: bool) -> ml_collections.ConfigDict:
  """The paper's FLIC (320×240, 7 joints) or MPII (256×256, 16 joints) config.

  `tiny` applies the configs' CPU-sized setting (64×64 or 64×48 input, width 1/8).
  """
  from heatpose_jax.configs import flic, mpii

  modules = {"flic": flic, "mpii": mpii}
  if name not in modules:
    raise ValueError(f"model must be one of {sorted(modules)}, got {name!r}")
  arg = ",".join((["tiny"] if tiny else []) + [f"pool={pool}"])
  return modules[name].get_config(arg)


def default_cases(
  *,
  sections: Sequence[str] = ("train", "forward"),
  train_models: Sequence[str] = ("mpii", "flic"),
  phases: Sequence[str] = ("coarse", "joint"),
  train_dtypes: Sequence[str] = ("bfloat16", "float32"),
  train_pool: int = 8,
  train_batch: int = 64,
  forward_model: str = "flic",
  pools: Sequence[int] = (8, 4, 16),
  forward_dtypes: Sequence[str] = ("float32", "bfloat16"),
  forward_batches: Sequence[int] = (1, 32),
) -> list[dict[str, Any]]:
  """The benchmark's cases, most important first.

  Order: training of the first model/phase/dtype (MPII coarse bf16); the
  forward times of the first forward dtype at every pool and batch (the paper's
  Table 2); the first training case in its other dtype (the f32 baseline); the
  remaining training cases, dtype by dtype; the forward times of the remaining
  dtypes.
  """
  train_cases = []
  if "train" in sections:
    train_cases = [
      {
        "section": "train",
        "model": m,
        "pool": train_pool,
        "phase": p,
        "dtype": d,
        "batch": train_batch,
      }
      for d in train_dtypes
      for m in train_models
      for p in phases
    ]
  forward_cases = []
  if "forward" in sections:
    forward_cases = [
      {"section": "forward", "model": forward_model, "pool": pf, "dtype": d, "batch": b}
      for d in forward_dtypes
      for pf in pools
      for b in forward_batches
    ]
  first = train_cases[:1]
  baseline = [
    c
    for c in train_cases[1:]
    if c["model"] == first[0]["model"] and c["phase"] == first[0]["phase"]
  ][:1]
  rest = [c for c in train_cases[1:] if c not in baseline]
  n = len(pools) * len(forward_batches)
  return first + forward_cases[:n] + baseline + rest + forward_cases[n:]


class _Job:
  """One case: its lowered (then compiled) functions and what timing them needs."""

  def __init__(self, case: dict[str, Any], tiny: bool, params_cache: dict):
    self.case = case
    t0 = time.perf_counter()
    config = model_config(case["model"], pool=case["pool"], tiny=tiny)
    self.hw = tuple(config.input_hw)
    h, w = self.hw
    self.info = {"input": f"{w}x{h}", "joints": joints_lib.get_skeleton(config.dataset).num_joints}
    self.lowered: dict[str, jax.stages.Lowered] = {}
    if case["section"] == "train":
      self.lowered["train"], self.setup = lower_train(
        config, phase=case["phase"], dtype=case["dtype"], batch_size=case["batch"]
      )
    elif case["section"] == "forward":
      self.model = train.build_model(config)
      key = (case["model"], case["pool"], tiny)
      if key not in params_cache:
        params_cache[key] = random_params(self.model, self.hw)
      self.params = params_cache[key]
      for part in PARTS:
        self.lowered[part] = lower_forward(
          self.model, self.hw, case["batch"], part=part, dtype=DTYPES[case["dtype"]]
        )
    else:
      raise ValueError(f"unknown section {case['section']!r}")
    self.lower_s = time.perf_counter() - t0
    self.compiled: dict[str, jax.stages.Compiled] = {}
    self.compile_s: dict[str, float] = {}

  def compile(self) -> None:
    """Compiles every lowered function (thread-safe: XLA releases the GIL)."""
    for name, lowered in self.lowered.items():
      t = time.perf_counter()
      self.compiled[name] = lowered.compile()
      self.compile_s[name] = time.perf_counter() - t

  def measure(
    self, *, train_steps: int, train_repeats: int, forward_iters: int, warmup: int
  ) -> dict:
    """Times the compiled functions; the case with its measurements."""
    case, out = self.case, dict(self.case, **self.info)
    share = self.lower_s / len(self.lowered)
    if case["section"] == "train":
      step_s, loss = time_train(
        self.compiled["train"], self.setup, steps=train_steps, repeats=train_repeats, warmup=warmup
      )
      out.update(
        _train_result(
          lowered_flops(self.lowered["train"], self.compiled["train"]),
          share + self.compile_s["train"],
          step_s,
          loss,
          case["batch"],
          _temp_bytes(self.compiled["train"]),
        )
      )
    else:
      for part in PARTS:
        call_s = time_forward(
          self.compiled[part],
          self.params,
          self.hw,
          case["batch"],
          iters=forward_iters,
          warmup=warmup,
        )
        stats = _forward_result(
          lowered_flops(self.lowered[part], self.compiled[part]),
          share + self.compile_s[part],
          call_s,
          case["batch"],
          _temp_bytes(self.compiled[part]),
        )
        out.update({f"{part}_{k}": v for k, v in stats.items()})
      out["fine_ms_per_image"] = out["cascade_ms_per_image"] - out["coarse_ms_per_image"]
      out["fine_gflop_per_image"] = out["cascade_gflop_per_image"] - out["coarse_gflop_per_image"]
    return out


def _kind(case: dict[str, Any]) -> tuple[str, str]:
  return case["section"], case.get("phase", "")


# Relative cost (compile and timing) of a case of each kind, for the estimate of
# a kind not seen yet: a forward case compiles two forward passes, a train step
# a forward, a backward and the optimizer; the joint step also has the fine model.
_WEIGHTS = {("forward", ""): 0.6, ("train", "coarse"): 1.0, ("train", "fine"): 1.2}
_WEIGHTS[("train", "joint")] = 1.5


def _estimate(seen: dict[tuple[str, str], float], kind: tuple[str, str]) -> float:
  """The longest seen time of `kind`, or one scaled from the other kinds by `_WEIGHTS`."""
  if kind in seen:
    return seen[kind]
  if not seen:
    return 0.0
  return max(v / _WEIGHTS.get(k, 1.0) for k, v in seen.items()) * _WEIGHTS.get(kind, 1.0)


def run_cases(
  cases: Sequence[dict[str, Any]],
  *,
  tiny: bool,
  max_seconds: float,
  compile_workers: int = 1,
  train_steps: int = 10,
  train_repeats: int = 3,
  forward_iters: int = 20,
  warmup: int = 2,
  on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
  """Runs `cases` in order within a time budget, compiling in parallel.

  The first case runs alone. The rest go in waves of up to `compile_workers`
  cases: a wave is lowered (main thread), compiled in parallel threads, then
  timed case by case with nothing else running, so that compilation never
  overlaps a measurement. Cases join a wave in order while its estimated time
  (the longest compile of its cases plus the sum of their timings, each the
  longest seen for cases of the same section and phase, or scaled from the
  other kinds by `_WEIGHTS` when none was seen) fits in the time left; a case
  that does not fit even alone is skipped and the next, perhaps cheaper, one is
  tried. A case that raises is recorded with its error and the run goes on.

  Args:
    cases: from `default_cases`.
    tiny: CPU-sized models.
    max_seconds: the budget, from the call.
    compile_workers: cases compiled at once (1: one case after the other).
    train_steps, train_repeats, forward_iters: see `time_train`, `time_forward`.
    warmup: untimed calls of each compiled function before its timing.
    on_result: called with each finished, skipped or failed case.

  Returns:
    dict with 'results' (measured cases), 'skipped' and 'failed'; each entry is
    its case plus its measurements and 'status'.
  """
  start = time.perf_counter()
  params_cache: dict = {}
  done = {"results": [], "skipped": [], "failed": []}
  compile_est: dict[tuple[str, str], float] = {}
  measure_est: dict[tuple[str, str], float] = {}

  def emit(entry, kind):
    entry["status"] = kind
    done[kind].append(entry)
    if on_result:
      on_result(entry)

  def fail(case, e):
    emit(dict(case, error=f"{type(e).__name__}: {e}"[:500]), "failed")

  def estimate(wave) -> float:
    c = max(_estimate(compile_est, _kind(x)) for x in wave)
    return c + sum(_estimate(measure_est, _kind(x)) for x in wave)

  pending = list(cases)
  first = True
  while pending:
    left = max_seconds - (time.perf_counter() - start)
    wave = []
    while pending and len(wave) < (1 if first else max(1, compile_workers)):
      if estimate([*wave, pending[0]]) <= left:
        wave.append(pending.pop(0))
      elif wave:
        break
      else:
        used = max_seconds - left
        emit(
          dict(pending.pop(0), reason=f"budget: {used:.0f} of {max_seconds:.0f} s used"), "skipped"
        )
    first = False
    if not wave:
      continue
    jobs = []
    for case in wave:
      try:
        jobs.append(_Job(case, tiny, params_cache))
      except Exception as e:  # noqa: BLE001 - report the case and go on.
        fail(case, e)
    errors: dict[int, Exception] = {}
    t_compile = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, len(jobs))) as pool:
      futures = [pool.submit(j.compile) for j in jobs]
      for i, f in enumerate(futures):
        if f.exception() is not None:
          errors[i] = f.exception()
    t_compile = time.perf_counter() - t_compile
    for i, j in enumerate(jobs):
      k = _kind(j.case)
      compile_est[k] = max(compile_est.get(k, 0.0), j.lower_s + t_compile)
      if i in errors:
        fail(j.case, errors[i])
        continue
      t = time.perf_counter()
      try:
        entry = j.measure(
          train_steps=train_steps,
          train_repeats=train_repeats,
          forward_iters=forward_iters,
          warmup=warmup,
        )
      except Exception as e:  # noqa: BLE001 - e.g. out of memory: report and go on.
        fail(j.case, e)
        continue
      finally:
        measure_est[k] = max(measure_est.get(k, 0.0), time.perf_counter() - t)
      entry["measure_s"] = time.perf_counter() - t
      emit(entry, "results")
    del jobs
  return done


# --- reporting ---------------------------------------------------------------------


def _f(x: float, digits: int) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def case_line(entry: dict[str, Any]) -> str:
  """One line describing a finished, skipped or failed case."""
  what = f"{entry['section']} {entry['model']} {entry['pool']}x"
  if entry["section"] == "train":
    what += f" {entry['phase']}"
  what += f" {entry['dtype']} batch {entry['batch']}"
  if entry["status"] == "skipped":
    return f"{what}: skipped ({entry['reason']})"
  if entry["status"] == "failed":
    return f"{what}: FAILED {entry['error']}"
  if entry["section"] == "train":
    return (
      f"{what}: {_f(entry['images_per_s'], 1)} img/s, {_f(entry['step_ms'], 2)} ms/step, "
      f"{_f(entry['gflop_per_image'], 1)} GFLOP/img, {_f(entry['tflops'], 1)} TFLOP/s "
      f"(compile {entry['compile_s']:.1f} s, timing {entry['measure_s']:.1f} s)"
    )
  return (
    f"{what}: coarse {_f(entry['coarse_ms_per_image'], 3)} ms/img, fine "
    f"{_f(entry['fine_ms_per_image'], 3)} ms/img, cascade {_f(entry['cascade_ms_per_image'], 3)} "
    f"ms/img (compile {entry['coarse_compile_s'] + entry['cascade_compile_s']:.1f} s, "
    f"timing {entry['measure_s']:.1f} s)"
  )


def format_markdown(report: dict[str, Any]) -> str:
  """Markdown of a `experiments.benchmark` report: header, one table per section."""
  info = report["device"]
  lines = [
    "# heatpose_jax benchmark",
    "",
    f"- device: {info['device_kind']} × {info['num_devices']} ({info['platform']})",
    f"- jax {info['jax']}, flax {info['flax']}",
    f"- command: `{report['command']}`",
    f"- total {report.get('elapsed_s', float('nan')):.0f} s of a {report['max_seconds']:.0f} s budget"
    + (" (tiny models)" if report.get("tiny") else ""),
    "",
  ]
  results = report["results"]
  trains = [r for r in results if r["section"] == "train"]
  if trains:
    lines += [
      "## Training throughput (real `train_step`: augmentation, targets, forward, backward, "
      "AdamW; no input pipeline)",
      "",
      "| model | input (W×H) | J | pool | phase | dtype | batch | ms/step | img/s "
      "| GFLOP/img/step | TFLOP/s | scratch GiB | compile s |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in trains:
      lines.append(
        f"| {r['model']} | {r['input']} | {r['joints']} | {r['pool']}x | {r['phase']} "
        f"| {r['dtype']} | {r['batch']} | {_f(r['step_ms'], 2)} | {_f(r['images_per_s'], 1)} "
        f"| {_f(r['gflop_per_image'], 1)} | {_f(r['tflops'], 1)} | {_f(r['temp_gib'], 2)} "
        f"| {_f(r['compile_s'], 1)} |"
      )
    lines.append("")
  forwards = sorted(
    (r for r in results if r["section"] == "forward"),
    key=lambda r: (r["model"], r["dtype"] != "float32", r["pool"], r["batch"]),
  )
  if forwards:
    lines += [
      "## Forward time per image (Table 2; fine = cascade − coarse)",
      "",
      "| model | input (W×H) | pool | dtype | batch | coarse ms/img | fine ms/img "
      "| cascade ms/img | GFLOP/img coarse | GFLOP/img fine | coarse TFLOP/s "
      "| cascade TFLOP/s | compile s |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in forwards:
      lines.append(
        f"| {r['model']} | {r['input']} | {r['pool']}x | {r['dtype']} | {r['batch']} "
        f"| {_f(r['coarse_ms_per_image'], 3)} | {_f(r['fine_ms_per_image'], 3)} "
        f"| {_f(r['cascade_ms_per_image'], 3)} | {_f(r['coarse_gflop_per_image'], 2)} "
        f"| {_f(r['fine_gflop_per_image'], 2)} | {_f(r['coarse_tflops'], 1)} "
        f"| {_f(r['cascade_tflops'], 1)} "
        f"| {_f(r['coarse_compile_s'] + r['cascade_compile_s'], 1)} |"
      )
    lines.append("")
  for kind in ("skipped", "failed"):
    if report.get(kind):
      lines += [f"## {kind.capitalize()}", ""]
      lines += [f"- {case_line(e)}" for e in report[kind]]
      lines.append("")
  return "\n".join(lines)
