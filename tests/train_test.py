"""Training end to end on 8 fake CPU devices: the three phases, per-phase
optimizers, checkpoints, evaluation and metrics; SIGKILL and resume with one
writer per workdir, SIGTERM, Ctrl-C, the NaN guard, and a real two-process run
(subprocesses only where a signal or a second process is the point)."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import SYNTHETIC_CONFIG, cli_env, one_device_mesh
from heatpose_jax import from_config, train
from heatpose_jax.configs import common
from heatpose_jax.core import sharding, workdir_lock
from heatpose_jax.training import checkpoints, metric_writer, train_step
from studies import records

# One xdist worker runs this file: the in-process baseline is trained once.
pytestmark = pytest.mark.xdist_group("train")

REPO = Path(__file__).resolve().parents[1]
STEPS = (2, 2, 2)
# What the in-process baseline and the subprocess runs share.
OVERRIDES = {"batch_size": 16, "max_eval_examples": 24, "log_every": 2, "model.norm": "none"}


def _env(devices=8):
  return cli_env(devices)


def _args(data, workdir, steps=STEPS, extra=()):
  data_dir, tfds_config = data
  c, f, j = steps
  return [
    sys.executable,
    "-m",
    "experiments.train",
    f"--config={SYNTHETIC_CONFIG}:tiny",
    f"--workdir={workdir}",
    f"--config.data_dir={data_dir}",
    f"--config.tfds_config={tfds_config}",
    f"--config.phases.coarse.steps={c}",
    f"--config.phases.fine.steps={f}",
    f"--config.phases.joint.steps={j}",
    "--config.checkpoint_every=2",
    *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
    *extra,
  ]


def _start(args, env=None, output=subprocess.PIPE) -> subprocess.Popen:
  """Starts `args` in the repository (environment `_env()` unless given), stdout and
  stderr to `output`: pipes read as text by default."""
  return subprocess.Popen(
    args, cwd=REPO, env=env or _env(), stdout=output, stderr=output, text=True
  )


def _run(args, env=None, timeout=600):
  r = subprocess.run(
    args, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
  )
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
  return r


def _steps(workdir) -> list[int]:
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _params(workdir, step=None):
  """A checkpoint's parameters as host numpy arrays (whatever topology wrote them)."""
  step = _steps(workdir)[-1] if step is None else step
  path = Path(workdir) / "checkpoints" / str(step) / "params"
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return step, ckptr.restore(path, restore_args=args)


def _assert_same(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def baseline(tiny_config, tmp_path_factory):
  """One uninterrupted in-process run of every phase: the reference below."""
  work = tmp_path_factory.mktemp("full")
  result = train.train_and_evaluate(tiny_config(STEPS, checkpoint_every=2, **OVERRIDES), str(work))
  return work, result


def test_three_phases_checkpoint_evaluate_and_metrics(baseline):
  work, result = baseline
  assert _steps(work) == [2, 4, 6]  # one per phase boundary (keep_checkpoints=3)
  on_disk = json.loads((work / "eval" / "6.json").read_text())
  for r in (result, on_disk):
    assert r["num_examples"] == 24 and r["step"] == 6 and r["metric"] == "PCKh"
    for m in ("coarse", "cascade"):
      table = r[m]["table"]["0.5"]
      assert set(table) >= {"Head", "Shoulder", "Wrist", "Total"}
      assert all(np.isfinite(v) for v in table.values())
  assert json.loads((work / "config.json").read_text())["phases"]["coarse"]["steps"] == 2
  assert list((work / "tensorboard").iterdir())
  # Metrics as JSON lines: every phase's losses and the final evaluation.
  got = metric_writer.read_scalars(str(work), ["train/e1", "train/e2", "eval/val_e1"])
  np.testing.assert_array_equal(got["train/e1"][0], [2, 4, 6])
  assert got["train/e2"][1][0] == 0.0 and got["train/e2"][1][1] > 0  # E2 from the fine phase
  assert got["eval/val_e1"][0].tolist() == [6] and np.isfinite(got["eval/val_e1"][1]).all()
  # The training rate is a metric too; the studies' records read it from there.
  rate = metric_writer.read_scalars(str(work), ["train/img_per_s"])["train/img_per_s"]
  assert rate[0].tolist() == [2, 4, 6] and (rate[1] > 0).all()
  assert records.throughput(str(work)) == rate[1][-1]


def test_each_phase_has_its_own_optimizer(tiny_config):
  config = tiny_config(STEPS)
  mesh = one_device_mesh()
  model, phases = from_config.model(config), from_config.phases(config)
  names = [p.name for p in phases]
  assert names == ["coarse", "fine", "joint"]
  state = train_step.create_state(model, phases, (64, 64), mesh, jax.random.key(0, impl="rbg"))
  batch = next(iter(from_config.train_batches(config, "")))
  batch = sharding.to_global_array(batch, mesh)
  key = jax.random.key(0)
  step = {p: from_config.train_step(config, p, mesh, donate=False) for p in names}
  for _ in range(2):
    state, _ = step["coarse"](state, batch, key)
  count = lambda s: int(s[1].count)  # noqa: E731 - InjectHyperparams state's step count
  assert [count(state.opt_state[p]) for p in names] == [2, 0, 0]
  # The first fine update equals that of a freshly initialized optimizer.
  fresh = state.replace(
    opt_state=train_step.create_state(
      model, phases, (64, 64), mesh, jax.random.key(1, impl="rbg")
    ).opt_state
  )
  after, m = step["fine"](state, batch, key)
  after_fresh, m_fresh = step["fine"](fresh, batch, key)
  assert float(m["ok"]) == 1.0 and float(m["learning_rate"]) == float(m_fresh["learning_rate"])
  _assert_same(after.params["fine"], after_fresh.params["fine"])
  _assert_same(after.params["coarse"], state.params["coarse"])  # frozen in phase 2
  assert [count(after.opt_state[p]) for p in names] == [2, 1, 0]


def test_window_jitter_moves_the_fine_windows_and_leaves_the_coarse_loss(tiny_config):
  config = tiny_config(STEPS)
  mesh = one_device_mesh()
  model = from_config.model(config)
  stride = model.coarse_codec.stride
  # The offsets: N(0, σ²) input px per example, joint and axis; none at σ = 0.
  assert train_step.jittered_locate(model.coarse_codec, 0.0, jax.random.key(0)) is None
  heat = jax.random.uniform(jax.random.key(1), (64, 16, 16, 14))
  locate = train_step.jittered_locate(model.coarse_codec, 1.5 * stride, jax.random.key(2))
  offsets = np.asarray(locate(heat) - model.coarse_codec.decode(heat)[0])
  assert abs(offsets.mean()) < 0.1 * stride and offsets.std() == pytest.approx(
    1.5 * stride, rel=0.1
  )
  # Through the config: the same fine step with and without jitter sees the same
  # coarse maps (E1 equal) and other windows (E2 not).
  state = train_step.create_state(
    model, from_config.phases(config), (64, 64), mesh, jax.random.key(0, impl="rbg")
  )
  batch = sharding.to_global_array(next(iter(from_config.train_batches(config, ""))), mesh)
  metrics = {}
  for jitter in (0.0, 1.0):
    config.augment.window_jitter = jitter
    step = from_config.train_step(config, "fine", mesh, donate=False)
    _, metrics[jitter] = step(state, batch, jax.random.key(3))
  assert float(metrics[1.0]["ok"]) == 1.0
  assert float(metrics[1.0]["e1"]) == float(metrics[0.0]["e1"])
  assert float(metrics[1.0]["e2"]) != float(metrics[0.0]["e2"])


def test_a_phase_added_in_the_config_alone_trains_with_its_own_optimizer(tiny_config, tmp_path):
  # A fourth phase, by config only: the coarse model again at a tenth of the
  # learning rate, after the paper's coarse phase (the fine and joint phases off).
  config = tiny_config((1, 0, 0), log_every=1)
  config.phase_order = ("coarse", "fine", "joint", "coarse_polish")
  rate = config.phases.coarse.learning_rate / 10
  config.phases.coarse_polish = common.phase(2, ("coarse",), (1.0, 0.0), rate, warmup_steps=1)
  assert [b[0] for b in from_config.phase_bounds(config)] == ["coarse", "coarse_polish"]
  train.train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh())
  state = checkpoints.restore_latest(
    checkpoints.manager(str(tmp_path), 3), from_config.abstract_state(config, one_device_mesh())
  )[0]
  assert set(state.opt_state) == {"coarse", "coarse_polish"}
  assert int(state.opt_state["coarse_polish"][1].count) == 2
  lr = metric_writer.read_scalars(str(tmp_path), ["train/learning_rate"])["train/learning_rate"]
  assert lr[0].tolist() == [1, 2, 3] and 0 < lr[1][2] <= rate * 1.0001  # its own schedule
  # A phase the order does not list is refused with one line naming it.
  config.phases.stray = common.phase(1, ("coarse",), (1.0, 0.0), 1e-3)
  with pytest.raises(from_config.ConfigError, match="config.phases.stray is not in"):
    from_config.check(config)


def test_loss_weights_other_than_two_numbers_are_refused_with_the_value(tiny_config):
  config = tiny_config()
  # What a --config.phases.joint.loss_weights flag given twice makes: absl joins them.
  config.phases.joint.loss_weights = (1.0, 1.0, 1.0, 3.0)
  with pytest.raises(
    from_config.ConfigError, match=r"config\.phases\.joint: .*not \(1\.0, 1\.0, 1\.0, 3\.0\)"
  ):
    from_config.check(config)


def test_nan_guard_names_the_step_and_the_last_good_checkpoint(tiny_config, tmp_path):
  # Warmup makes step 1's learning rate 0; from step 2 on it is 1e30.
  nan = {"phases.coarse.learning_rate": 1e30, "phases.coarse.grad_clip": 1e30}
  config = tiny_config((6, 0, 0), **nan, checkpoint_every=1)
  with pytest.raises(FloatingPointError, match=r"at steps 2\.\.2 .*last good checkpoint: step 1"):
    train.train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh())
  assert _steps(tmp_path) == [1]
  _, params = _params(tmp_path)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def _lock_holder(workdir) -> str:
  path = Path(workdir) / workdir_lock.TRAIN_LOCK
  return path.read_text() if path.exists() else ""


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_and_one_writer_per_workdir(
  tiny_data, tiny_config, baseline, tmp_path
):
  killed = tmp_path / "killed"
  proc = _start(_args(tiny_data, killed), output=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and not _steps(killed):
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  stopped = _steps(killed)[-1]
  assert stopped < sum(STEPS)
  assert f"pid {proc.pid} " in _lock_holder(killed)  # what a SIGKILL leaves: not a stale lock
  resumed = _start(_args(tiny_data, killed))
  try:
    # The next run starts; once it holds the lock, hold it still while a second one tries.
    while time.time() < deadline and f"pid {resumed.pid} " not in _lock_holder(killed):
      assert resumed.poll() is None, resumed.communicate()[1][-3000:]
      time.sleep(0.02)
    resumed.send_signal(signal.SIGSTOP)
    second = subprocess.run(
      _args(tiny_data, killed), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )
    # Readers need no lock: the parameters of the newest checkpoint read meanwhile.
    abstract = from_config.abstract_state(tiny_config(STEPS, **OVERRIDES), one_device_mesh())
    assert checkpoints.restore_params(str(killed), abstract.params)[1] == stopped
  finally:
    resumed.send_signal(signal.SIGCONT)
  out, err = resumed.communicate(timeout=300)
  assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: workdir {killed} is in use"), lines
  assert f"pid {resumed.pid} " in lines[0]
  # The first one is unaffected: it resumes and ends as the uninterrupted run.
  assert resumed.returncode == 0, err[-3000:]
  assert f"resumed from {killed} step {stopped}" in out
  step, params = _params(killed)
  assert step == sum(STEPS)
  _assert_same(_params(baseline[0])[1], params)


@pytest.mark.slow
def test_sigterm_saves_before_exit(tiny_data, tmp_path):
  work = tmp_path / "term"
  proc = _start(
    _args(
      tiny_data,
      work,
      steps=(400, 0, 0),
      extra=["--config.checkpoint_every=1000", "--config.log_every=1"],
    ),
    env=_env(devices=1),  # signals, not data parallelism: the cheaper compile
  )
  # Wait for training to run (the first progress line), then ask it to stop.
  seen = _wait_for_training(proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, seen + out + err
  assert "SIGTERM: saved step" in err and "rerun the same command to resume" in out
  assert 0 < _steps(work)[-1] < 400


def _wait_for_training(proc) -> str:
  """Reads `proc`'s stdout up to its first progress line (or its end); what it read."""
  deadline, seen = time.time() + 240, ""
  while time.time() < deadline:
    line = proc.stdout.readline()
    seen += line
    if "img/s" in line or not line:
      break
  return seen


def _start_long_run(tiny_data, work, env=None, extra=()):
  """A 400-step run in the background (the same config as the SIGTERM test: compiled once).

  It starts with SIGINT's default action, as under a terminal, even where the suite
  itself was started with SIGINT ignored (`cmd &` in a script, where training keeps
  ignoring it): a small Python resets it and execs the run (no fork of this process).
  """
  args = _args(
    tiny_data,
    work,
    steps=(400, 0, 0),
    extra=["--config.checkpoint_every=1000", "--config.log_every=1", *extra],
  )
  reset = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
  reset += "os.execv(sys.argv[1], sys.argv[1:])"
  return _start([sys.executable, "-c", reset, *args], env=env or _env(devices=1))


@pytest.mark.slow
def test_ctrl_c_saves_at_the_step_boundary_and_exits_130_in_one_line(tiny_data, tmp_path):
  work = tmp_path / "interrupted"
  proc = _start_long_run(tiny_data, work)
  seen = _wait_for_training(proc)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, seen + out + err[-3000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  saved = _steps(work)
  assert len(saved) == 1 and 0 < saved[0] < 400
  lines = err.strip().splitlines()
  assert lines == [
    f"interrupted (Ctrl-C): saved step {saved[0]} in {work}; rerun the same command to resume"
  ]


def _signals_caught(pid: int) -> int:
  """The mask of signals `pid` has handlers for (Linux)."""
  for line in Path(f"/proc/{pid}/status").read_text().splitlines():
    if line.startswith("SigCgt:"):
      return int(line.split()[1], 16)
  return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_second_ctrl_c_exits_at_once_without_saving(tiny_data, tmp_path):
  work = tmp_path / "twice"
  proc = _start_long_run(tiny_data, work)
  bit = lambda sig: 1 << (sig - 1)  # noqa: E731
  deadline = time.time() + 240
  try:
    # The loop's handlers are in place once SIGTERM is caught (Python leaves it alone):
    # the first step (its compile) is still ahead.
    while not _signals_caught(proc.pid) & bit(signal.SIGTERM):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    # Handled (SIGINT is back to its default action): the second one ends the process.
    while _signals_caught(proc.pid) & bit(signal.SIGINT):
      assert proc.poll() is None and time.time() < deadline
      time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGINT, (proc.returncode, out, err[-3000:])
  assert "Traceback" not in err, err[-3000:]
  assert _steps(work) == []  # gone before the step ended: nothing saved


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(tiny_data, workdir, steps, extra=()):
  port = _free_port()
  return [
    _start(
      _args(
        tiny_data,
        workdir,
        steps=steps,
        extra=[
          f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2",
          f"--process_id={i}",
          "--cpu_collectives=gloo",
          "--verbosity=0",
          *extra,
        ],
      ),
      env=_env(devices=4),
    )
    for i in range(2)
  ]


@pytest.mark.slow
def test_two_processes_equal_one(tiny_config, tiny_data, tmp_path):
  # The coarse phase only: the data-parallel path is the same in every phase.
  steps = (3, 0, 0)
  # Without GroupNorm: it leaves coordinates whose gradient is rounding noise, and
  # Adam's first steps turn any noise into ±lr, whatever the device layout.
  one = tmp_path / "one"
  config = tiny_config(steps, checkpoint_every=2, **OVERRIDES)
  train.train_and_evaluate(config, str(one))
  multi = tmp_path / "multi"
  procs = _two_processes(tiny_data, multi, steps)
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-5000:]
  assert "process 1/2" in outs[1][1] and "8 global devices" in outs[1][1]
  # Each process fed only its half of every global batch, yet the parameters
  # equal those of one process with the same global batch.
  _assert_same(_params(one)[1], _params(multi)[1])
  # Both processes scored the whole split (every host sees every prediction).
  assert json.loads((multi / "eval" / "3.json").read_text())["num_examples"] == 24


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_at_the_same_step(tiny_data, tmp_path):
  work = tmp_path / "preempted"
  procs = _two_processes(tiny_data, work, (400, 0, 0), extra=["--config.checkpoint_every=1000"])
  deadline = time.time() + 300
  while time.time() < deadline and not (work / "metrics.jsonl").exists():
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # only process 1 is signalled
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-2000:] + err[-3000:]
  stopped = _steps(work)
  assert len(stopped) == 1 and 0 < stopped[0] < 400
  assert all(f"saved step {stopped[0]}" in err for _, err in outs)
