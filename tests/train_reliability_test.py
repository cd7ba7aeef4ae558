"""Reliability of training (docs/reliability.md): a failed restore ends its
reads before its event loop (issue 23; the resume past a truncated checkpoint:
robustness_test.py); one writer per workdir; resuming with a changed config is
never silent. (Ctrl-C and the lock with real training processes: train_test.py;
the data dir's lock: build_test.py.)"""

import asyncio
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.serialization import serialization

from conftest import SYNTHETIC_CONFIG, config_flags, one_device_mesh, run_cli
from heatpose_jax import config_changes, from_config
from heatpose_jax.configs import common, synthetic
from heatpose_jax.core import workdir_lock
from heatpose_jax.training import checkpoints

# The tests sharing the session fixture `tiny_run` run on its xdist worker (built once).
pytestmark = pytest.mark.xdist_group("tiny_run")

REPO = Path(__file__).resolve().parents[1]
# The `:tiny` values the change messages print (`old -> new`).
TINY_ROTATION = synthetic.get_config("tiny").augment.rotation
TINY_LR = synthetic.get_config("tiny").phases.coarse.learning_rate
# tiny_run's config, as `--config.*` flags on top of `synthetic.py:tiny` (see conftest).
TINY_RUN = {
  "phases.coarse.steps": 2,
  "phases.fine.steps": 1,
  "phases.joint.steps": 1,
  "batch_size": 8,
  "log_every": 1,
  "checkpoint_every": 2,
  "max_eval_examples": 8,
  "canvas_cache": True,
  "model.norm": "none",
}


def _tiny_run_config(tiny_config):
  return tiny_config((2, 1, 1), checkpoint_every=2, canvas_cache=True)


def _files(step_dir: Path, item: str) -> list[Path]:
  return sorted(
    (f for f in (step_dir / item).rglob("*") if f.is_file()), key=lambda f: f.stat().st_size
  )


def _cut(path: Path, size: int) -> None:
  os.truncate(path, size)


# Ways to damage a checkpoint: each leaves step 4 unreadable. The first two are
# the ones whose failed restores used to leave reads in flight.
CORRUPTIONS = {
  "truncated array file": lambda d: _cut(_files(d, "params")[-1], 1000),
  "truncated manifest": lambda d: _cut(d / "train" / "manifest.ocdbt", 10),
  "truncated metadata": lambda d: _cut(d / "params" / "_METADATA", 100),
  "deleted array file": lambda d: _files(d, "params")[-1].unlink(),
}


@pytest.fixture
def in_flight(monkeypatch):
  """How many tasks (TensorStore reads) are unfinished each time an event loop closes."""
  counts, close = [], asyncio.BaseEventLoop.close

  def counting_close(loop):
    counts.append(sum(not t.done() for t in asyncio.all_tasks(loop)))
    close(loop)

  monkeypatch.setattr(asyncio.BaseEventLoop, "close", counting_close)
  return counts


def test_a_failed_restore_waits_for_its_other_reads(
  tiny_run, tiny_config, tmp_path, in_flight, monkeypatch
):
  # The race made certain: the first array read fails at once, every other one is
  # still in flight then. Before the fix, orbax closed the loop over them.
  real, calls = serialization._read_shard, []

  async def read_shard(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      raise OSError("unreadable")
    await asyncio.sleep(0.05)
    return await real(*args, **kwargs)

  monkeypatch.setattr(serialization, "_read_shard", read_shard)
  shutil.copytree(tiny_run / "checkpoints", tmp_path / "checkpoints")
  abstract = from_config.abstract_state(_tiny_run_config(tiny_config), one_device_mesh())
  mngr = checkpoints.manager(str(tmp_path), 3)
  try:
    _, step = checkpoints.restore_latest(mngr, abstract)  # 4 fails, 3 reads
  finally:
    mngr.close()
  assert step == 3 and len(calls) > 2
  assert in_flight and not any(in_flight), in_flight


def test_a_failed_restore_leaves_no_reads_in_flight(
  tiny_run, tiny_config, tmp_path, caplog, capfd, monkeypatch, in_flight
):
  # Without the fix, TensorStore's reads outlived their event loop: "Event loop
  # is closed" tracebacks from its threads, "Exception ignored in <coroutine>"
  # when collected; in 3 of 5 CLI resumes, ~120 of them.
  unraisable = []
  monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
  abstract = from_config.abstract_state(_tiny_run_config(tiny_config), one_device_mesh())
  step3, _ = checkpoints.restore_params(str(tiny_run), abstract.params, step=3)
  # Without the fix, nearly every restore of the first two kinds left reads behind.
  kinds = list(CORRUPTIONS)
  for i, name in enumerate(kinds):
    work = tmp_path / str(i)
    shutil.copytree(tiny_run / "checkpoints", work / "checkpoints")
    CORRUPTIONS[name](work / "checkpoints" / "4")
    caplog.clear()
    mngr = checkpoints.manager(str(work), 3)
    try:
      state, step = checkpoints.restore_latest(mngr, abstract)
    finally:
      mngr.close()
    assert step == 3, name
    skipped = [r for r in caplog.records if "checkpoints/4 skipped" in r.getMessage()]
    assert len(skipped) == 1, (name, caplog.text)
    jax.tree.map(np.testing.assert_array_equal, state.params, step3)
  assert in_flight and not any(in_flight), in_flight
  gc.collect()
  time.sleep(0.2)  # a late callback would land now
  out, err = capfd.readouterr()
  assert "Traceback" not in out + err and "Event loop is closed" not in err, err[-3000:]
  assert not unraisable, [str(u.exc_value)[:200] for u in unraisable]


# --- one writer per workdir ------------------------------------------------------

_HOLDER = (
  "import sys, time\n"
  "from heatpose_jax.core import workdir_lock as w\n"
  "with w.hold(sys.argv[1], w.TRAIN_LOCK, what='x'):\n"
  "  print('held', flush=True)\n"
  "  time.sleep(120)\n"
)


def test_the_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path):
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.InUse) as e:
      with workdir_lock.hold(str(tmp_path), workdir_lock.TRAIN_LOCK, what=f"workdir {tmp_path}"):
        pass
    message = str(e.value)
    assert f"workdir {tmp_path} is in use" in message and f"pid {holder.pid} " in message
    assert "\n" not in message
  finally:
    holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
    holder.wait()
  assert (tmp_path / workdir_lock.TRAIN_LOCK).exists()  # the file stays, the lock does not
  with workdir_lock.hold(str(tmp_path), workdir_lock.TRAIN_LOCK, what="x"):
    text = (tmp_path / workdir_lock.TRAIN_LOCK).read_text()
    assert f"pid {os.getpid()} " in text


# --- resuming with a changed config ---------------------------------------------


def _digest(workdir: Path) -> dict[str, str]:
  """Checksums of what a refused resume must leave alone."""
  out = {}
  for p in sorted(workdir.rglob("*")):
    if p.is_file() and p.name != workdir_lock.TRAIN_LOCK:
      out[str(p.relative_to(workdir))] = hashlib.sha256(p.read_bytes()).hexdigest()
  return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  return work


def _train_cli(work, tiny_data, *extra, **changes):
  """`experiments.train` with tiny_run's config and `changes` (as a user reruns it)."""
  data_dir, name = tiny_data
  flags = {**TINY_RUN, "data_dir": data_dir, "tfds_config": name, **changes}
  return run_cli(
    "experiments.train",
    f"--config={SYNTHETIC_CONFIG}:tiny",
    f"--workdir={work}",
    *config_flags(flags),
    *extra,
  )


def _refused(r, work, *needles) -> None:
  """Exit 1, one line naming the workdir, the step, each needle and the ways out."""
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
  assert "Traceback" not in r.stderr
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {work}: its checkpoints (to step 4)"), last
  for needle in [*needles, "new --workdir", "--allow_config_change"]:
    assert needle in last, (needle, last)


@pytest.mark.parametrize(
  ("change", "needles"),
  [
    # tiny_run trained 2 coarse, 1 fine, 1 joint steps: step 3 was fine.
    (
      {"phases.coarse.steps": 3},
      ["phases.coarse.steps 2 -> 3", "step 3 was trained as fine"],
    ),
    ({"batch_size": 16}, ["batch_size 8 -> 16"]),
    (
      {"augment.rotation": 5.0, "seed": 1},
      [f"augment.rotation {TINY_ROTATION} -> 5.0", "seed 0 -> 1"],
    ),
  ],
  ids=["passed-phase-boundary", "batch-size", "data"],
)
def test_a_config_change_that_alters_the_saved_steps_is_refused(
  run_copy, tiny_data, change, needles
):
  before = _digest(run_copy)
  _refused(_train_cli(run_copy, tiny_data, **change), run_copy, *needles)
  assert _digest(run_copy) == before  # config.json, history, checkpoints: untouched


def test_a_changed_model_names_the_parameter_and_the_model_fields(run_copy, tiny_data):
  """A model change is caught by the checkpoint's shapes first; the one line also
  names the `model.*` fields that changed (e.g. an old run resumed with a config
  that sets a field added since it was trained)."""
  before = _digest(run_copy)
  r = _train_cli(run_copy, tiny_data, **{"model.head_norm": False})
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
  assert "Traceback" not in r.stderr
  last = r.stderr.strip().splitlines()[-1]
  assert "['coarse']['head0']['bias']" in last, last
  assert last.endswith("changed since it was trained: model.head_norm true -> false"), last
  assert _digest(run_copy) == before


def test_a_config_json_edited_by_hand_is_a_change_too(run_copy):
  # `--workdir` alone resumes with config.json: compared with what last ran (the history).
  path = run_copy / "config.json"
  config = json.loads(path.read_text())
  config["batch_size"] = 16
  path.write_text(json.dumps(config))
  before = _digest(run_copy)
  _refused(run_cli("experiments.train", f"--workdir={run_copy}"), run_copy, "batch_size 8 -> 16")
  assert _digest(run_copy) == before


def test_safe_changes_are_printed_and_recorded_and_the_flag_resumes_anyway(run_copy, tiny_data):
  history = config_changes.history(str(run_copy))
  assert len(history) == 1 and history[0]["start_step"] == 0  # tiny_run's first run
  safe = {"max_eval_examples": 4, "log_every": 2}
  r = _train_cli(run_copy, tiny_data, **safe)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (
    "config changed since the saved run: log_every 1 -> 2, max_eval_examples 8 -> 4; "
    "recorded in config_history.jsonl"
  ) in r.stdout
  assert json.loads((run_copy / "config.json").read_text())["max_eval_examples"] == 4
  history = config_changes.history(str(run_copy))
  assert [h["config"]["max_eval_examples"] for h in history] == [8, 4]
  assert history[1]["start_step"] == 4 and history[1]["changed"]["log_every"] == [1, 2]
  # The learning rate of a phase already trained: refused, then resumed with the flag,
  # said and recorded as such.
  lr = {"phases.coarse.learning_rate": 0.01}
  _refused(
    _train_cli(run_copy, tiny_data, **safe, **lr),
    run_copy,
    f"phases.coarse.learning_rate {TINY_LR} -> 0.01",
  )
  r = _train_cli(run_copy, tiny_data, "--allow_config_change", **safe, **lr)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (
    f"phases.coarse.learning_rate {TINY_LR} -> 0.01 "
    "(allowed by --allow_config_change: phases.coarse.learning_rate)"
  ) in r.stdout
  history = config_changes.history(str(run_copy))
  assert len(history) == 3 and history[2]["allowed_by_flag"] is True
  rates = [h["config"]["phases"]["coarse"]["learning_rate"] for h in history]
  assert rates == [TINY_LR, TINY_LR, 0.01]


def _config(steps, **overrides):
  c = synthetic.get_config("tiny")
  common.set_steps(c, *steps)
  return from_config.with_overrides(c, overrides)


@pytest.mark.parametrize(
  ("old", "new", "saved", "refused"),
  [
    # The case: a finished 20/10/10 run rerun with 40 coarse steps.
    ((20, 10, 10), (40, 10, 10), 40, ["phases.coarse.steps"]),
    ((20, 10, 10), (20, 10, 30), 40, []),  # more steps at the end of the last phase
    ((20, 10, 10), (30, 10, 10), 15, []),  # the phase under way ends later
    ((20, 10, 10), (20, 10, 10), 0, []),
    ((20, 10, 10), (10, 10, 10), 15, ["phases.coarse.steps"]),  # step 10..15 would be fine
    ((20, 10, 10), (20, 10, 5), 40, ["phases.joint.steps"]),  # ends before the saved step
    ((20, 0, 0), (20, 10, 0), 20, ["phases.fine.steps"]),  # a phase added
  ],
)
def test_which_phase_changes_are_safe(old, new, saved, refused):
  result = config_changes.check(_config(old), _config(new), saved, allow=True)
  assert result["refused"] == refused


def test_learning_rates_of_phases_not_begun_may_change():
  old = _config((20, 10, 10))
  joint = {"phases.joint.learning_rate": 1e-5, "phases.joint.loss_weights": (1.0, 0.5)}
  new = _config((20, 10, 10), **joint, eval_every=7, data_dir="/x")
  assert config_changes.check(old, new, 25, allow=False)["refused"] == []
  assert config_changes.check(old, new, 35, allow=True)["refused"] == sorted(joint)
  with pytest.raises(config_changes.ConfigChangeError, match="phases.joint.learning_rate"):
    config_changes.check(old, new, 35, workdir="w")
  # Nothing saved yet: anything goes (and is still reported).
  changed = config_changes.check(old, _config((20, 10, 10), batch_size=4), None)
  assert changed["changed"] == {"batch_size": [16, 4]} and not changed["refused"]


def test_a_config_saved_before_phases_were_data_loads_as_it_trained(tmp_path):
  # config.json of a run trained with `coarse_steps` ... `lam` (before config.phases).
  new = _config((20, 10, 10))
  old = json.loads(new.to_json_best_effort())
  del old["phases"], old["phase_order"]
  c, f = new.phases.coarse, new.phases.fine
  j = new.phases.joint
  old.update(
    coarse_steps=20,
    fine_steps=10,
    joint_steps=10,
    learning_rate=c.learning_rate,
    joint_learning_rate=j.learning_rate,
    lam=j.loss_weights[1],
    warmup_steps=c.warmup_steps,
    weight_decay=0.0,
    grad_clip=1.0,
  )
  (tmp_path / "config.json").write_text(json.dumps(old))
  loaded = from_config.load_run_config(str(tmp_path))
  assert config_changes.check(loaded, new, 35)["changed"] == {}
  assert from_config.phases(loaded) == from_config.phases(new)
  assert f.learning_rate == c.learning_rate
