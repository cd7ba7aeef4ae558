"""What the studies share: records of finished runs keyed by a config digest (so a
study runs piece by piece and merges the pieces), loss curves from metrics.jsonl,
mean ± std over seeds, and the small formatting helpers of their reports."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from heatpose_jax.core import fileio, sharding
from heatpose_jax.training import metric_writer
from studies import runs as runs_lib

# Config fields that change neither what a run learns nor what its record holds.
CURVE_POINTS = 200  # loss-curve points kept per record
_DIGEST_IGNORE = (
  "data_dir",
  "worker_count",
  "canvas_cache",
  "checkpoint_every",
  "keep_checkpoints",
)


# Fields added after records were made, at the value that reproduces what came
# before: left out of the digest at that value, so the records stay matched.
_DIGEST_NEUTRAL = {
  ("eval", "flip_test"): False,
  ("eval", "fuse_coarse"): False,
  ("augment", "window_jitter"): 0.0,
  ("model", "context_blocks"): 0,
  ("model", "early_width"): 0.0,
  ("model", "head_norm"): False,
  ("model", "global_context"): False,
}


def config_digest(config: ml_collections.ConfigDict, **extra) -> str:
  """A short hash of what a run learns and how the study measures it."""
  d = json.loads(config.to_json_best_effort())
  for k in _DIGEST_IGNORE:
    d.pop(k, None)
  for (section, key), neutral in _DIGEST_NEUTRAL.items():
    if d.get(section, {}).get(key, neutral) == neutral:
      d.get(section, {}).pop(key, None)
  text = json.dumps([d, extra], sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def clean_json(x: Any) -> Any:
  """`x` with numpy values as Python ones and non-finite floats as None (valid JSON)."""
  if isinstance(x, dict):
    return {str(k): clean_json(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [clean_json(v) for v in x]
  if isinstance(x, np.ndarray):
    return clean_json(x.tolist())
  if isinstance(x, np.bool_ | bool):
    return bool(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, float | np.floating):
    return float(x) if math.isfinite(float(x)) else None
  return x


def mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
  """{"mean", "std", "n"} over the finite values (population std, as `tables.Table`)."""
  v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if not v.size:
    return {"mean": None, "std": None, "n": 0}
  return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def fmt(s: dict | None, spec: str = ".2f") -> str:
  """'m ± s' of a `mean_std` dict ('n/a' when empty)."""
  if not s or s.get("mean") is None:
    return "n/a"
  if s.get("n", 1) > 1:
    return f"{s['mean']:{spec}} ± {s['std']:{spec}}"
  return f"{s['mean']:{spec}}"


def read_curves(
  run_dir: str, names: Sequence[str], max_points: int = CURVE_POINTS
) -> dict[str, list[list[float]]]:
  """name -> [steps, values] from the run's metrics.jsonl, thinned to `max_points`
  (evenly spaced, the last point kept)."""
  out = {}
  for name, (steps, values) in metric_writer.read_scalars(run_dir, names).items():
    if steps.size > max_points:
      keep = np.unique(np.linspace(0, steps.size - 1, max_points).round().astype(int))
      steps, values = steps[keep], values[keep]
    out[name] = [steps.tolist(), values.tolist()]
  return out


def relative_drop(steps, values, start: int, end: int) -> float | None:
  """How much a curve still falls at the end of [start, end): (mean of the tenth
  before the last − mean of the last tenth) / the former. None if too short."""
  s, v = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  span = max(end - start, 1)
  last = (s > end - span / 10) & (s <= end) & np.isfinite(v)
  before = (s > end - span / 5) & (s <= end - span / 10) & np.isfinite(v)
  if not last.any() or not before.any():
    return None
  a, b = float(v[before].mean()), float(v[last].mean())
  return (a - b) / a if a else None


def throughput(run_dir: str) -> float | None:
  """The run's last training img/s: `train/img_per_s` in its metrics.jsonl (since
  the process started or resumed), else the last one `experiments.train` printed
  in `<run>/train.log` (runs from before it was written); None if neither."""
  rates = metric_writer.read_scalars(run_dir, ["train/img_per_s"]).get("train/img_per_s")
  if rates is not None and len(rates[1]):
    return float(rates[1][-1])
  path = os.path.join(run_dir, "train.log")
  if not os.path.exists(path):
    return None
  with open(path, errors="replace") as f:
    found = re.findall(r"([0-9.]+) img/s", f.read())
  return float(found[-1]) if found else None


def device_info(mesh: Mesh) -> str:
  d = mesh.devices.flat[0]
  return f"{d.device_kind} ({d.platform}, {mesh.devices.size} device(s))"


def today() -> str:
  return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


class RecordStore:
  """One JSON record per run in `directory` (`<run name>.json`)."""

  def __init__(self, directory: str):
    self.directory = directory

  def path(self, name: str) -> str:
    return os.path.join(self.directory, f"{name}.json")

  def load(self, name: str) -> dict | None:
    p = self.path(name)
    if not os.path.exists(p):
      return None
    with open(p) as f:
      return json.load(f)

  def save(self, name: str, record: dict) -> None:
    if jax.process_index() == 0:
      fileio.write_json(self.path(name), clean_json(record))

  def names(self) -> list[str]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(n[:-5] for n in os.listdir(self.directory) if n.endswith(".json"))


def check_selection(
  groups: Sequence[str], seeds: Sequence[int], known_groups: Sequence[str]
) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """A study invocation's groups and seed indices as tuples; ValueError unless the
  groups are a non-empty subset of `known_groups` and the seeds non-negative."""
  groups = tuple(groups)
  seeds = tuple(int(s) for s in seeds)
  if not groups or any(g not in known_groups for g in groups):
    raise ValueError(f"groups must be a non-empty subset of {known_groups}, got {groups}")
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f"seeds must be non-negative seed indices, got {seeds}")
  return groups, seeds


def study_dirs(
  workdir: str, out_dir: str, figures_dir: str, mesh: Mesh | None
) -> tuple[str, str, Mesh]:
  """A study's absolute output and figure directories (defaults: `workdir`, then
  `out_dir`) and its data mesh (default: every device)."""
  out_dir = os.path.abspath(out_dir or workdir)
  figures_dir = os.path.abspath(figures_dir or out_dir)
  mesh = sharding.make_mesh() if mesh is None else mesh
  return out_dir, figures_dir, mesh


def split_todo(
  runs: Sequence[runs_lib.Run], store: RecordStore, digests: dict[str, str]
) -> list[runs_lib.Run]:
  """The runs without a matching record (the others are reused as they are)."""
  todo = []
  for run in runs:
    rec = store.load(run.name)
    if rec is not None and rec.get("config_digest") == digests[run.name]:
      print(f"reusing record of {run.name} ({store.path(run.name)})", flush=True)
      continue
    if rec is not None:
      logging.warning("record of %s is of another config: measured again", run.name)
    todo.append(run)
  return todo


def relpath(path: str, start: str) -> str:
  return os.path.relpath(os.path.abspath(path), os.path.abspath(start))


def steps_of(config: ml_collections.ConfigDict) -> dict:
  """A run's training schedule, as its record keeps it."""
  return {
    **{name: int(config.phases[name].steps) for name in config.phase_order},
    "batch_size": int(config.batch_size),
    "eval_every": int(config.eval_every),
    "dtype": str(config.dtype),
  }


def record_runs(
  runs: Sequence[runs_lib.Run],
  store: RecordStore,
  digests: dict[str, str],
  measure,
  *,
  train: bool,
  max_parallel: int,
  mesh: Mesh,
  train_args: Sequence[str],
) -> None:
  """Trains the runs without a matching record (with `train`), then measures each
  finished one into its record: `measure(run) -> dict` plus the run's name, seed,
  config digest, schedule, device and date. Unfinished runs are left out, said so."""
  todo = split_todo(runs, store, digests)
  if train and todo:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs_lib.train_runs(todo, max_parallel=max_parallel, mesh=mesh, train_args=train_args, cwd=repo)
  for run in todo:
    if not runs_lib.is_finished(run):
      print(f"{run.name}: not trained (no record, no finished run): left out", flush=True)
      continue
    rec = {
      "run": run.name,
      "seed_index": run.seed_index,
      "seed": int(run.config.seed),
      "config_digest": digests[run.name],
      "steps": steps_of(run.config),
      "device": device_info(mesh),
      "date": today(),
      **measure(run),
    }
    store.save(run.name, rec)
    print(f"recorded {run.name}: {store.path(run.name)}", flush=True)


def provenance(
  records: Sequence[dict], mesh: Mesh, command: str, figures: dict[str, str], out_dir: str
) -> dict:
  """What a study's result says of where it comes from: the runs, the figures (paths
  relative to `out_dir`), the command, this device, the records' devices and the date."""
  return {
    "runs": [r["run"] for r in records],
    "throughput_img_s": {r["run"]: r.get("throughput_img_s") for r in records},
    "figures": {k: relpath(v, out_dir) for k, v in figures.items()},
    "command": command,
    "device": device_info(mesh),
    "record_devices": sorted({r.get("device", "?") for r in records}),
    "date": today(),
  }


def provenance_lines(res: dict) -> list[str]:
  """The Markdown lines of `provenance` and of the groups not yet measured."""
  lines = [
    f"- device: {res['device']} (records from: {', '.join(res['record_devices']) or 'none'})",
    f"- date: {res['date']}",
    f"- command: `{res['command']}`",
    "",
  ]
  if res["missing_groups"]:
    lines += [f"Not yet measured: {', '.join(res['missing_groups'])}.", ""]
  return lines


def figure_lines(res: dict) -> list[str]:
  return [f"![{name}]({path})" for name, path in res["figures"].items()]


def save_figure(fig, figures_dir: str, name: str) -> str:
  """Saves `fig` as `figures_dir/<name>.png` (90 dpi); returns the path."""
  path = os.path.join(figures_dir, f"{name}.png")
  fileio.save_figure(fig, path, dpi=90)
  return path


def publish(result: dict, out_dir: str, study: str, markdown) -> dict:
  """Writes `<study>.json` and `<study>.md` (`markdown(result)`, process 0) of the
  JSON-clean result, and returns it."""
  result = clean_json(result)
  if jax.process_index() == 0:
    fileio.write_json(os.path.join(out_dir, f"{study}.json"), result)
    fileio.write_text(os.path.join(out_dir, f"{study}.md"), markdown(result))
    print(f"{study}: {out_dir}/{study}.json, {study}.md", flush=True)
  return result
