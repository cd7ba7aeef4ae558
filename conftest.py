"""pytest set-up shared by every test: 8 fake CPU devices, fast compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile times dominate the tests: the fusion emitters roughly double XLA:CPU's, and
# the FAST_COMPILE preset takes another ≈ 10 % off (tests only; runs keep the defaults).
FAST_COMPILE = (
  "--xla_cpu_use_fusion_emitters=false --xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE"
)
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}"
  ).strip()

# One persistent compilation cache per test session, shared by the subprocesses the
# tests start (they inherit the variable): a train step compiled once is reused.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile

  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="heatpose_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

# Tests are dominated by compile time, not run time.
jax.config.update("jax_disable_most_optimizations", True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """(data_dir, config name) of the one small synthetic build every training test shares:
  64 train / 24 test images at 64×64, half of them with a distractor person."""
  from heatpose_jax.data import synthetic_dataset

  d = tmp_path_factory.mktemp("tiny_data")
  builder = synthetic_dataset.prepare(
    "tiny", str(d), num_train=64, num_test=24, distractor_prob=0.5
  )
  return str(d), builder.builder_config.name


@pytest.fixture(scope="session")
def tiny_config(tiny_data):
  """A factory: the synthetic `:tiny` config on `tiny_data` with a few steps and overrides.

  Without GroupNorm (a third of a train step's compile time): these tests are not
  about learning. The tests that are (`learning_test`), GroupNorm's own
  (`models_test`) and the notebook's run keep the quick start's model."""
  from heatpose_jax import from_config
  from heatpose_jax.configs import common, synthetic

  def make(steps=(2, 2, 2), **overrides):
    c = synthetic.get_config("tiny")
    c.data_dir, c.tfds_config = tiny_data
    common.set_steps(c, *steps)
    c.batch_size = 8
    c.log_every = 1
    c.checkpoint_every = 2
    c.max_eval_examples = 8
    c.model.norm = "none"
    return from_config.with_overrides(c, overrides)

  return make


def one_device_mesh():
  """A mesh of one CPU device: what tests that are not about data parallelism use
  (8-device SPMD programs take longer to compile)."""
  import jax

  from heatpose_jax.core import sharding

  return sharding.make_mesh(jax.devices()[:1])


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory):
  """A workdir trained in-process through the three phases (2, 1, 1 steps): what
  the prediction, export and robustness tests read."""
  from heatpose_jax import train

  workdir = tmp_path_factory.mktemp("tiny_run")
  # With the canvas cache: the cached path of the pipeline is trained through too.
  config = tiny_config((2, 1, 1), checkpoint_every=2, canvas_cache=True)
  train.train_and_evaluate(config, str(workdir), mesh=one_device_mesh())
  return workdir


def cli_env(devices: int = 1) -> dict[str, str]:
  """The environment of a subprocess the tests start: this one's, on `devices` CPU
  devices, compiled as this process compiles (fast, most optimizations off)."""
  return {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",  # as in this process
    "PYTHONUNBUFFERED": "1",
  }


def run_cli(module: str, *args: str, devices: int = 1, timeout: int = 300):
  """`python -m module args...` on the CPU (as a user runs it); the CompletedProcess."""
  import subprocess
  import sys

  env = cli_env(devices)
  repo = os.path.dirname(os.path.abspath(__file__))
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=repo,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def one_line_error(r, *needles, code=1):
  """Exit `code`, stderr's last line is `error: ...` naming every needle, no traceback."""
  assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), r.stderr[-3000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  for n in needles:
    assert str(n) in last, (n, last)
  return last


SYNTHETIC_CONFIG = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "heatpose_jax", "configs", "synthetic.py"
)
# A study's run on `tiny_data`: one coarse and one fine step (the two phases the studies
# read; each costs a compile), 32×32 canvases, every checkpoint kept, no GroupNorm
# (fewer ops to compile; the studies' tests are not about learning).
STUDY_OVERRIDES = {
  "phases.coarse.steps": 1,
  "phases.fine.steps": 1,
  "phases.joint.steps": 0,
  "input_hw": (32, 32),
  "batch_size": 8,
  "log_every": 1,
  "checkpoint_every": 2,
  "max_eval_examples": 8,
  "model.norm": "none",
}


def config_flags(overrides: dict) -> list[str]:
  """`--config.<key>=<value>` flags for a CLI (tuples as Python literals)."""
  return [
    f"--config.{k}={repr(tuple(v)) if isinstance(v, tuple) else v}" for k, v in overrides.items()
  ]


# xdist: each test file runs on one worker, so module fixtures (a trained run)
# are built once; files that share the session fixture `tiny_run` form one group.
# The slowest groups are handed out first, so that no long one starts last.
_SLOW_FIRST = (
  "train",
  "tiny_run",
  "paper_test",
  "learning_test",
  "precision_study_test",
  "benchmark_test",
  "spatial_training_test",
  "mrf_study_test",
  "notebook_test",
  "models_test",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  def group(item):
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
      name = os.path.splitext(os.path.basename(str(item.fspath)))[0]
      item.add_marker(pytest.mark.xdist_group(name))
      return name
    return marker.args[0] if marker.args else marker.kwargs.get("name")

  rank = {name: i for i, name in enumerate(_SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(group(item), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
  # xdist groups tests by an "@group" suffix its workers write into each node id;
  # where that no longer takes (pytest 9.2 with xdist 3.8, pytest-xdist#1386) groups
  # are split silently and every module fixture is built once per worker.
  if node.config.getvalue("dist") == "loadgroup" and ids and "@" not in ids[0]:
    pytest.exit(
      f"--dist=loadgroup does not group tests with pytest {pytest.__version__}: "
      "install the pinned versions (bash scripts/setup.sh)",
      returncode=pytest.ExitCode.USAGE_ERROR,
    )
