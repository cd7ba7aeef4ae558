"""End to end: the three phases on 8 fake CPU devices, checkpoints, SIGKILL and
resume, SIGTERM, the NaN guard, evaluation, and a real two-process run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "heatpose_jax" / "configs" / "synthetic.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  import tensorflow_datasets as tfds

  from heatpose_jax import synthetic_dataset as synthetic

  d = tmp_path_factory.mktemp("data")
  cfg = synthetic.custom_config("tiny", num_train=64, num_test=24)
  synthetic.Synthetic(data_dir=str(d), config=cfg).download_and_prepare(
    download_config=tfds.download.DownloadConfig()
  )
  return str(d), cfg.name


def _env(devices=8):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={devices} --xla_cpu_use_fusion_emitters=false"
  )
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  env["PYTHONUNBUFFERED"] = "1"
  return env


def _args(data, workdir, steps=(4, 4, 4), extra=()):
  data_dir, tfds_config = data
  c, f, j = steps
  return [
    sys.executable,
    "-m",
    "experiments.train",
    f"--config={CONFIG}:tiny",
    f"--workdir={workdir}",
    f"--config.data_dir={data_dir}",
    f"--config.tfds_config={tfds_config}",
    f"--config.coarse_steps={c}",
    f"--config.fine_steps={f}",
    f"--config.joint_steps={j}",
    "--config.checkpoint_every=2",
    "--config.log_every=2",
    "--config.batch_size=16",
    "--config.max_eval_examples=24",
    *extra,
  ]


def _run(args, env=None, timeout=600):
  r = subprocess.run(
    args, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
  )
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
  return r


def _final_params(workdir):
  ckpt = Path(workdir) / "checkpoints"
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  import jax

  # As host numpy arrays: a checkpoint written by two processes restores here
  # without its device topology.
  path = ckpt / str(step) / "default"
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path).item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return step, ckptr.restore(path, restore_args=args)["params"]


def _assert_same(a, b):
  import jax

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


STEPS = (2, 2, 2)


@pytest.fixture(scope="module")
def baseline(data_dir, tmp_path_factory):
  """One uninterrupted run of every phase: the reference of the tests below."""
  full = tmp_path_factory.mktemp("full")
  _run(_args(data_dir, full, steps=STEPS))
  return full


def test_three_phases_checkpoint_and_evaluate(baseline):
  step, _ = _final_params(baseline)
  assert step == sum(STEPS)
  result = json.loads((baseline / "eval" / f"{step}.json").read_text())
  for m in ("coarse", "cascade"):
    table = result[m]["table"]["0.5"]
    assert set(table) >= {"Head", "Shoulder", "Wrist", "Total"}
    assert all(np.isfinite(v) for v in table.values())
  assert result["num_examples"] == 24
  assert (baseline / "config.json").exists() and list((baseline / "tensorboard").iterdir())
  # A checkpoint at each phase boundary survives (keep_checkpoints=3).
  kept = {int(p.name) for p in (baseline / "checkpoints").iterdir() if p.name.isdigit()}
  assert {2, 4, 6} <= kept


def test_sigkill_then_resume_equals_uninterrupted(data_dir, baseline, tmp_path):
  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    _args(data_dir, killed, steps=STEPS),
    cwd=REPO,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  ckpt = killed / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  stopped = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  assert stopped < sum(STEPS)
  r = _run(_args(data_dir, killed, steps=STEPS))
  assert f"resumed from {killed} step {stopped}" in r.stderr
  step, params_resumed = _final_params(killed)
  assert step == sum(STEPS)
  _assert_same(_final_params(baseline)[1], params_resumed)


def test_sigterm_saves_before_exit(data_dir, tmp_path):
  work = tmp_path / "term"
  proc = subprocess.Popen(
    _args(
      data_dir,
      work,
      steps=(400, 0, 0),
      extra=["--config.checkpoint_every=1000", "--config.log_every=1"],
    ),
    cwd=REPO,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  # Wait for training to run (the first progress line), then ask it to stop.
  deadline = time.time() + 240
  seen = ""
  while time.time() < deadline:
    line = proc.stderr.readline()
    seen += line
    if "img/s" in line or not line:
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, seen + err
  assert "SIGTERM: saved step" in err
  step, _ = _final_params(work)
  assert 0 < step < 400


def test_nan_guard_stops_with_step_range(data_dir, tmp_path):
  r = subprocess.run(
    _args(
      data_dir,
      tmp_path / "nan",
      steps=(6, 0, 0),
      extra=["--config.learning_rate=1e30", "--config.grad_clip=1e30"],
    ),
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode != 0
  assert "non-finite loss or gradient at steps" in r.stderr
  # The checkpoints that were written hold finite parameters.
  ckpt = tmp_path / "nan" / "checkpoints"
  if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
    import jax

    _, params = _final_params(tmp_path / "nan")
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(data_dir, baseline, tmp_path):
  multi = tmp_path / "multi"
  port = _free_port()
  procs = [
    subprocess.Popen(
      _args(
        data_dir,
        multi,
        steps=STEPS,
        extra=[
          f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2",
          f"--process_id={i}",
          "--cpu_collectives=gloo",
        ],
      ),
      cwd=REPO,
      env=_env(devices=4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-5000:]
  assert "process 1/2" in outs[1][1] and "8 global devices" in outs[1][1]
  # Each process fed only its half of every global batch, yet the parameters
  # equal those of one process with the same global batch.
  _assert_same(_final_params(baseline)[1], _final_params(multi)[1])
  # Both processes scored the whole split (every host sees every prediction).
  res = json.loads((multi / "eval" / "6.json").read_text())
  assert (
    res["num_examples"] == json.loads((baseline / "eval" / "6.json").read_text())["num_examples"]
  )
