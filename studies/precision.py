"""The precision study (paper §4.1, Table 1, Fig. 11, Fig. 12): how much the cascade's
fine model sharpens the coarse heat-map's estimate, measured as the paper does.

  python -m experiments.precision_study --config=heatpose_jax/configs/synthetic.py:paper,bf16 \
      --workdir=runs/precision --out_dir=docs/results --figures_dir=docs/figures \
      [--pools=4,8,16] [--groups=clean,noise] [--seeds=0,1,2]

Runs (`make_run`): the base config at each pooling in `pools`, trained on clean
labels ('clean') or with annotation noise on the training labels only ('noise':
`config.label_noise`; evaluation scores the clean labels), for each seed index,
in `workdir/precision/runs/pool<p>[_noise][_seed<k>]/`, trained and reused by
`studies.runs.train_runs` (in this process or as subprocesses; SIGTERM
checkpoints, the same command resumes).

Each run is measured once into a *record* (`OUT_DIR/precision_records/<run>.json`,
self-contained and small): the coarse estimate of the phase-1 checkpoint (the
coarse model trained alone) against the cascade of the final checkpoint, on the
eval split, in input (canvas) pixels:

  * σ of the x error within the paper's ±20 px window (scaled with the torso,
    ±20·torso/80 px, when the geometry's torso is not within 10 % of the
    paper's 80 px; the torso is measured on the eval split) and the robust σ
    (1.4826 × MAD of the kept errors), per joint and per table column;
  * x-error histograms (Fig. 11), PCK@0.05 and PCK curves over α ∈ [0, 0.2]
    with the torso normalizer (FLIC's PCK, Fig. 12), PCKh@0.05 beside it;
  * the loss curves `train/e1`, `train/e2`, `eval/val_e1` (metrics.jsonl) and
    how flat each one is at its end.

A run whose record matches the run this command would train (same config
digest) is neither trained nor predicted again, so the study can be run piece
by piece (`--pools`, `--groups`, `--seeds`), on different machines, and the
records of all pieces are merged: `OUT_DIR/precision.json` (mean ± std over
seeds), `precision.md` (the comparison with the paper) and the figures
`precision_{x_error_histograms,pck_curves,loss_curves}.png` come from every
matching record present, and list the runs still missing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from heatpose_jax import from_config
from heatpose_jax.data import input_pipeline
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics
from studies import predictions as preds_lib
from studies import runs as runs_lib
from studies import tables
from studies.records import (
  RecordStore,
  check_selection,
  config_digest,
  figure_lines,
  fmt,
  mean_std,
  provenance,
  provenance_lines,
  publish,
  read_curves,
  record_runs,
  relative_drop,
  save_figure,
  steps_of,
  study_dirs,
  throughput,
)

STUDY = "precision"
POOLS = (4, 8, 16)
GROUPS = ("clean", "noise")
MAIN_POOL = 8  # the headline's pooling when the base config's is not one of POOLS
PAPER_TORSO_PX = 80.0  # FLIC at the network input (the `paper` synthetic geometry)
PAPER_WINDOW_PX = 20.0  # the paper's outlier bound, |e| <= 20 px (Fig. 11's footnote)
# Annotation noise of the 'noise' group, px at the paper's geometry (scaled like the
# window): of the order of FLIC's measured annotation σ (Table 1: 0.65 px for the
# face, more for the other joints).
DEFAULT_NOISE_PX = 2.0
PCK_ALPHA = 0.05
CURVE_ALPHAS = np.linspace(0.0, 0.2, 21)  # Fig. 12's range (FLIC PCK)
PCK_NORMALIZERS = {"torso_size": "PCK", "head_size": "PCKh"}
HIST_BINS = 40
FLAT_TOLERANCE = 0.03  # a curve is flat when its last tenth is < 3 % below the tenth before
# Fig. 11 (FLIC, 8x, input px): the σ of the x error of the coarse model and the cascade.
PAPER = {
  "figure": "Fig. 11 (FLIC test set, 8x pooling, input px, |e| <= 20)",
  "head_sigma_x": {"coarse": 3.13, "cascade": 1.09},
  "shoulder_sigma_x": {"coarse": 4.25, "cascade": 2.43},
  "head_ratio": round(1.09 / 3.13, 3),
  "shoulder_ratio": round(2.43 / 4.25, 3),
}
TARGETS = {"sigma_x_ratio_max": 0.5, "pck_gain_min_points": 15.0}


# --- geometry ----------------------------------------------------------------------


def torso_px(config: ml_collections.ConfigDict) -> np.ndarray:
  """Torso size (‖r_shoulder − l_hip‖ of the clean joints, the dataset's `torso_size`)
  of each eval example, input (canvas) px: `(N,)`. No image is decoded."""
  source = from_config.dataset_source(config, config.eval_split)
  n = len(source) if not config.max_eval_examples else min(len(source), config.max_eval_examples)
  out = np.empty(n)
  for i in range(n):
    ex = source[i]
    m = input_pipeline.crop_transform(
      ex,
      crop_mode=config.crop_mode,
      canvas_hw=tuple(config.input_hw),
      image_scale=config.image_scale or None,
      box_scale=config.box_scale or None,
    )
    out[i] = float(ex["torso_size"]) / float(m[0, 0])  # m: canvas -> image px
  return out


def geometry_scale(torso: float) -> float:
  """1 when the torso is within 10 % of the paper's 80 px, else torso / 80: the
  factor applied to the paper's ±20 px window and to the label noise."""
  r = torso / PAPER_TORSO_PX
  return 1.0 if abs(r - 1.0) <= 0.1 else r


def measure_geometry(
  config: ml_collections.ConfigDict, pools: Sequence[int], window_px: float = 0.0
) -> dict:
  """`input_hw`, `context`, `pool`, the eval split's torso (median, 10–90 %
  range) in input px, the scale to the paper's geometry and the σ window."""
  t = torso_px(config)
  med = float(np.median(t))
  scale = geometry_scale(med)
  return {
    "input_hw": list(config.input_hw),
    "context": int(config.model.context),
    "pool": sorted(int(p) for p in pools),
    "torso_px": med,
    "torso_px_p10_p90": [float(np.percentile(t, 10)), float(np.percentile(t, 90))],
    "scale_to_paper": scale,
    "window_px": float(window_px) if window_px else PAPER_WINDOW_PX * scale,
    "window_source": "given"
    if window_px
    else "the paper's ±20 px (torso within 10 % of its 80 px)"
    if scale == 1.0
    else "±20 px × torso / 80 px",
  }


# --- runs --------------------------------------------------------------------------


def run_name(pool: int, group: str, seed_index: int) -> str:
  return (
    f"pool{pool}"
    + ("_noise" if group == "noise" else "")
    + (f"_seed{seed_index}" if seed_index else "")
  )


def make_run(
  base: ml_collections.ConfigDict,
  workdir: str,
  pool: int,
  group: str,
  seed_index: int,
  *,
  noise_px: float,
  checkpoints_per_run: int,
  evals_per_run: int,
) -> runs_lib.Run:
  """Run `pool<p>[_noise][_seed<k>]`: `base` at pooling `pool`, label noise
  `noise_px` (canvas px) on the training labels for group 'noise', seed
  `base.seed + seed_index`, about `evals_per_run` evaluations (the val-E1 curve)."""
  if group not in GROUPS:
    raise ValueError(f"unknown precision group {group!r}; known: {GROUPS}")
  total = runs_lib.total_steps(base)
  o: dict[str, Any] = {
    "model.pool_factor": int(pool),
    "label_noise": float(noise_px) if group == "noise" else 0.0,
    "eval_every": max(1, total // max(1, evals_per_run)),
  }
  if seed_index:
    o["seed"] = int(base.seed) + seed_index
  o.update(runs_lib.checkpoint_overrides(runs_lib.apply_overrides(base, o), checkpoints_per_run))
  name = run_name(pool, group, seed_index)
  config = runs_lib.apply_overrides(base, o)
  return runs_lib.Run(
    f"{STUDY}:{group}", seed_index, os.path.join(workdir, "runs", name), o, config
  )


@dataclasses.dataclass
class Plan:
  """What the study measures and how: the base config, its geometry and its runs."""

  base: ml_collections.ConfigDict
  workdir: str
  geometry: dict
  noise_px: float  # at the paper's geometry
  noise_canvas_px: float  # on this geometry's training labels
  checkpoints_per_run: int
  evals_per_run: int

  def run(self, pool: int, group: str, seed_index: int) -> runs_lib.Run:
    return make_run(
      self.base,
      os.path.join(self.workdir, STUDY),
      pool,
      group,
      seed_index,
      noise_px=self.noise_canvas_px,
      checkpoints_per_run=self.checkpoints_per_run,
      evals_per_run=self.evals_per_run,
    )

  def digest(self, run: runs_lib.Run) -> str:
    return config_digest(
      run.config, study=STUDY, window_px=self.geometry["window_px"], alphas=CURVE_ALPHAS.tolist()
    )


# --- one run's record ----------------------------------------------------------------


def _histograms(err: np.ndarray, valid: np.ndarray, cols: dict, edges: np.ndarray) -> dict:
  """Column -> counts of its valid x errors in `edges` (pooled over its joints)."""
  out = {}
  for c, idx in cols.items():
    e = err[:, idx][valid[:, idx]]
    out[c] = np.histogram(e[np.abs(e) <= edges[-1]], bins=edges)[0].tolist()
  return out


def measure_run(
  run: runs_lib.Run,
  cache: preds_lib.PredictionCache,
  skeleton: joints_lib.Skeleton,
  window_px: float,
) -> dict:
  """The statistics of one run (JSON-ready): coarse = the phase-1 checkpoint's
  coarse estimate, cascade = the final checkpoint's cascade estimate."""
  phase1 = from_config.phase_end(run.config, "coarse")
  if not phase1:
    raise ValueError(
      "the precision study needs the coarse phase: config.phases.coarse has no steps"
    )
  preds = {"coarse": cache.predictions(run, phase1), "cascade": cache.predictions(run)}
  cols = skeleton.table_indices()
  edges = np.linspace(-window_px, window_px, HIST_BINS + 1)
  rec: dict[str, Any] = {
    "joints": list(skeleton.model_joints),
    "columns": list(cols),
    "num_eval": int(preds["cascade"]["joints"].shape[0]),
    "torso_px_eval": float(np.median(preds["cascade"]["torso_size"])),
    "hist_edges": edges.tolist(),
  }
  for key in ("sigma_x", "robust_sigma_x", "removed", "column_sigma_x", "column_robust_sigma_x"):
    rec[key] = {}
  rec["histograms"], rec["pck_at_0.05"], rec["pck_curves"] = {}, {}, {}
  for m, p in preds.items():
    pred, gt, valid = p[m], p["joints"], p["joints_valid"] > 0
    s = metrics.x_error_stats(pred, gt, valid, window_px, per_joint=True)
    names = skeleton.model_joints
    rec["sigma_x"][m] = dict(zip(names, s.sigma.tolist(), strict=True))
    rec["robust_sigma_x"][m] = dict(zip(names, s.robust_sigma.tolist(), strict=True))
    rec["removed"][m] = dict(zip(names, s.removed.tolist(), strict=True))
    pooled = {
      c: metrics.x_error_stats(pred[:, i], gt[:, i], valid[:, i], window_px)
      for c, i in cols.items()
    }
    rec["column_sigma_x"][m] = {c: v.sigma for c, v in pooled.items()}
    rec["column_robust_sigma_x"][m] = {c: v.robust_sigma for c, v in pooled.items()}
    rec["histograms"][m] = _histograms(pred[..., 0] - gt[..., 0], valid, cols, edges)
    rec["pck_at_0.05"][m] = {
      norm: {
        k: float(v[0]) for k, v in preds_lib.pck_columns(p, m, skeleton, norm, [PCK_ALPHA]).items()
      }
      for norm in PCK_NORMALIZERS
    }
    curve = preds_lib.pck_columns(p, m, skeleton, "torso_size", CURVE_ALPHAS)
    rec["pck_curves"][m] = {k: v.tolist() for k, v in curve.items()}
  rec["curves"] = read_curves(run.directory, ["train/e1", "train/e2", "eval/val_e1"])
  rec["convergence"] = convergence(run, rec["curves"])
  rec["throughput_img_s"] = throughput(run.directory)
  return rec


def _last_drop(values: Sequence[float | None]) -> float | None:
  """(second-to-last − last) / second-to-last of an evaluation curve, None if too short."""
  v = [x for x in values if x is not None and math.isfinite(x)]
  return (v[-2] - v[-1]) / v[-2] if len(v) >= 2 and v[-2] else None


def convergence(run: runs_lib.Run, curves: dict) -> dict:
  """How much each loss still falls at its end (`relative_drop`): train E1 at the
  end of phase 1, train E2 and E1 at the end of training, val E1 between its
  last two evaluations of phase 1 and of the run; `flat` when every one is below
  `FLAT_TOLERANCE`."""
  bounds = from_config.phase_bounds(run.config)
  total = bounds[-1][2]
  _, p1_start, p1_end = bounds[0]
  last_start = bounds[-1][1]
  out = {
    "train_e1_phase1": relative_drop(*curves["train/e1"], p1_start, p1_end),
    "train_e1_end": relative_drop(*curves["train/e1"], last_start, total),
    "train_e2_end": relative_drop(*curves["train/e2"], last_start, total),
  }
  vs, vv = curves["eval/val_e1"]
  # The coarse estimate is the phase-1 checkpoint's: its val E1 matters there too.
  v1 = [v for s, v in zip(vs, vv, strict=True) if s <= p1_end]
  out["val_e1_phase1"] = _last_drop(v1)
  out["val_e1_last_eval"] = _last_drop(vv)
  drops = [v for v in out.values() if v is not None]
  out["flat"] = bool(drops) and all(d < FLAT_TOLERANCE for d in drops)
  out["tolerance"] = FLAT_TOLERANCE
  return out


# --- the study -------------------------------------------------------------------------


def plan_study(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  pools: Sequence[int],
  noise_px: float,
  window_px: float,
  checkpoints_per_run: int,
  evals_per_run: int,
) -> Plan:
  geometry = measure_geometry(config, pools, window_px)
  return Plan(
    config,
    os.path.abspath(workdir),
    geometry,
    float(noise_px),
    float(noise_px) * geometry["scale_to_paper"],
    checkpoints_per_run,
    evals_per_run,
  )


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str,
  out_dir: str = "",
  *,
  pools: Sequence[int] = POOLS,
  groups: Sequence[str] = GROUPS,
  seeds: Sequence[int] = (0, 1, 2),
  noise_px: float = DEFAULT_NOISE_PX,
  window_px: float = 0.0,
  train: bool = True,
  max_parallel: int = 0,
  train_args: Sequence[str] = (),
  checkpoints_per_run: int = 4,
  evals_per_run: int = 8,
  figures_dir: str = "",
  command: str = "",
  mesh: Mesh | None = None,
) -> dict:
  """Trains (or reuses) the selected runs, records them, and writes the study's
  outputs from every matching record in `out_dir`.

  Args:
    config: the base config (the command line's, overrides applied).
    workdir: runs go to `workdir/precision/runs/`.
    out_dir: `precision.json`, `precision.md`, `precision_records/` (default: workdir).
    pools, groups, seeds: the runs of this invocation: pooling factors (of `POOLS`),
      'clean' and/or 'noise', seed indices (seed = config.seed + index).
    noise_px: σ of the 'noise' group's annotation noise, px at the paper's geometry
      (scaled with the torso as the window is).
    window_px: the σ window ±window_px (0: ±20 px scaled with the torso).
    train: False trains nothing: runs without a record are measured if finished,
      else reported missing.
    max_parallel, train_args: see `runs.train_runs` (0: in this process).
    checkpoints_per_run: about this many checkpoints per run (phase ends are saved too).
    evals_per_run: evaluations during a run (its val-E1 curve).
    figures_dir: where the figures go (default: out_dir).
    command: the command line, quoted in the outputs.
    mesh: the data mesh (default: every device).

  Returns:
    The content of `precision.json`.
  """
  pools, groups, seeds = _check_selection(config, pools, groups, seeds)
  out_dir, figures_dir, mesh = study_dirs(workdir, out_dir, figures_dir, mesh)
  plan = plan_study(
    config,
    workdir,
    pools=POOLS,
    noise_px=noise_px,
    window_px=window_px,
    checkpoints_per_run=checkpoints_per_run,
    evals_per_run=evals_per_run,
  )
  store = RecordStore(os.path.join(out_dir, f"{STUDY}_records"))
  runs = [plan.run(p, g, s) for p in pools for g in groups for s in seeds]
  _record(plan, runs, store, mesh, train=train, max_parallel=max_parallel, train_args=train_args)
  return write_report(plan, store, out_dir, figures_dir, command, mesh)


def _check_selection(config, pools, groups, seeds):
  """The invocation's pools, groups and seed indices as tuples; ValueError for
  unknown ones, or a config without a coarse phase (the coarse estimate's)."""
  pools = tuple(int(p) for p in pools)
  if not pools or any(p not in POOLS for p in pools):
    raise ValueError(f"pools must be a non-empty subset of {POOLS}, got {pools}")
  groups, seeds = check_selection(groups, seeds, GROUPS)
  if not from_config.phase_end(config, "coarse"):
    raise ValueError(
      "the precision study needs the coarse phase: config.phases.coarse has no steps"
    )
  return pools, groups, seeds


def _record(plan: Plan, runs: list[runs_lib.Run], store: RecordStore, mesh: Mesh, **training):
  """`record_runs` of `runs` (`training`: its train, max_parallel, train_args): each
  record holds the run's pooling, group, label noise and σ window, and `measure_run`."""
  digests = {r.name: plan.digest(r) for r in runs}
  cache = preds_lib.PredictionCache(mesh)
  skel = from_config.skeleton(plan.base)

  def measure(run):
    return {
      "pool": int(run.config.model.pool_factor),
      "group": run.kind.split(":")[1],
      "label_noise_px": float(run.config.label_noise),
      "window_px": plan.geometry["window_px"],
      **measure_run(run, cache, skel, plan.geometry["window_px"]),
    }

  record_runs(runs, store, digests, measure, mesh=mesh, **training)


def matching_records(plan: Plan, store: RecordStore) -> tuple[list[dict], list[str]]:
  """The records that match the runs this plan would train (same config digest), and
  the names of the others (ignored)."""
  used, ignored = [], []
  for name in store.names():
    rec = store.load(name)
    try:
      expected = plan.digest(plan.run(int(rec["pool"]), rec["group"], int(rec["seed_index"])))
    except (KeyError, TypeError, ValueError):
      expected = None
    (used if rec and rec.get("config_digest") == expected else ignored).append(rec or name)
  return used, [r if isinstance(r, str) else r.get("run", "?") for r in ignored]


# --- merging records -------------------------------------------------------------------


def _ratio(rec: dict, key: str = "sigma_x") -> float | None:
  """Mean over joints of σ_cascade / σ_coarse (joints where both are finite)."""
  c, f = rec[key]["coarse"], rec[key]["cascade"]
  r = [f[j] / c[j] for j in c if c[j] and f[j] is not None and c[j] is not None]
  return float(np.mean(r)) if r else None


def far_errors(rec: dict, estimate: str) -> dict[str, float | None]:
  """From a record's histograms (all table columns pooled, bin centres): the share
  of the kept x errors beyond ±window/2 and their share of Σe², the part of the
  plain σ that its robust σ leaves out (gross errors, not the peak's width)."""
  edges = np.asarray(rec["hist_edges"])
  centres = 0.5 * (edges[1:] + edges[:-1])
  counts = np.sum([rec["histograms"][estimate][c] for c in rec["histograms"][estimate]], axis=0)
  far = np.abs(centres) > edges[-1] / 2
  n, sq = counts.sum(), (counts * centres**2).sum()
  return {
    "share": float(counts[far].sum() / n) if n else None,
    "variance_share": float((counts * centres**2)[far].sum() / sq) if sq else None,
  }


def _column_ratio(rec: dict, column: str) -> float | None:
  c = rec["column_sigma_x"]["coarse"].get(column)
  f = rec["column_sigma_x"]["cascade"].get(column)
  return f / c if c and f is not None else None


def aggregate(records: list[dict]) -> dict:
  """Mean ± std over seeds of each (group, pool): the JSON's measured sections."""
  by = {}
  for r in records:
    by.setdefault((r["group"], int(r["pool"])), []).append(r)
  out = {
    k: {}
    for k in (
      "sigma_x",
      "robust_sigma_x",
      "column_sigma_x",
      "column_robust_sigma_x",
      "pck_at_0.05",
      "pck_gain_at_0.05",
      "ratios",
      "far_errors",
      "convergence",
    )
  }
  for (g, p), recs in sorted(by.items()):
    pk = str(p)
    for key in ("sigma_x", "robust_sigma_x", "column_sigma_x", "column_robust_sigma_x"):
      out[key].setdefault(g, {})[pk] = {
        m: {j: mean_std(r[key][m][j] for r in recs) for j in recs[0][key][m]}
        for m in ("coarse", "cascade")
      }
    out["pck_at_0.05"].setdefault(g, {})[pk] = {
      m: {
        norm: {
          c: mean_std(r["pck_at_0.05"][m][norm][c] for r in recs)
          for c in recs[0]["pck_at_0.05"][m][norm]
        }
        for norm in PCK_NORMALIZERS
      }
      for m in ("coarse", "cascade")
    }
    out["pck_gain_at_0.05"].setdefault(g, {})[pk] = {
      norm: {
        c: mean_std(
          r["pck_at_0.05"]["cascade"][norm][c] - r["pck_at_0.05"]["coarse"][norm][c]
          if r["pck_at_0.05"]["cascade"][norm][c] is not None
          and r["pck_at_0.05"]["coarse"][norm][c] is not None
          else None
          for r in recs
        )
        for c in recs[0]["pck_at_0.05"]["cascade"][norm]
      }
      for norm in PCK_NORMALIZERS
    }
    out["ratios"].setdefault(g, {})[pk] = {
      "mean_over_joints": mean_std(_ratio(r) for r in recs),
      "robust_mean_over_joints": mean_std(_ratio(r, "robust_sigma_x") for r in recs),
      "Head": mean_std(_column_ratio(r, "Head") for r in recs),
      "Shoulder": mean_std(_column_ratio(r, "Shoulder") for r in recs),
      "per_seed": [_ratio(r) for r in recs],
      "seeds": [int(r["seed"]) for r in recs],
    }
    far = {m: [far_errors(r, m) for r in recs] for m in ("coarse", "cascade")}
    out["far_errors"].setdefault(g, {})[pk] = {
      m: {k: mean_std(f[k] for f in fs) for k in ("share", "variance_share")}
      for m, fs in far.items()
    }
    out["convergence"].setdefault(g, {})[pk] = {
      r["run"]: {k: r["convergence"][k] for k in r["convergence"]} for r in recs
    }
  return out


def write_report(
  plan: Plan, store: RecordStore, out_dir: str, figures_dir: str, command: str, mesh: Mesh
) -> dict:
  """`precision.json`, `precision.md` and the figures from the matching records."""
  records, ignored = matching_records(plan, store)
  records.sort(key=lambda r: (int(r["pool"]), GROUPS.index(r["group"]), int(r["seed_index"])))
  agg = aggregate(records)
  pool = main_pool(plan.base)
  main = agg["ratios"].get("clean", {}).get(str(pool))
  main_noise = agg["ratios"].get("noise", {}).get(str(pool))
  headline = _headline(main, pool, "clean")
  main_records = [r for r in records if r["group"] == "clean" and int(r["pool"]) == pool]
  present = {(r["group"], int(r["pool"])) for r in records}
  expected = [(g, p) for p in POOLS for g in GROUPS]
  figures = {}
  if records and jax.process_index() == 0:
    figures = write_figures(records, figures_dir)
  geometry = {**plan.geometry, "pool": sorted({int(r["pool"]) for r in records})}
  steps = records[0]["steps"] if records else steps_of(plan.base)
  result = {
    "study": STUDY,
    "seeds": sorted({int(r["seed"]) for r in records}),
    "geometry": geometry,
    "dataset": f"{plan.base.tfds_name}/{plan.base.tfds_config or 'default'}, eval split "
    f"{plan.base.eval_split!r}",
    "steps": steps,
    "label_noise_px": {"paper_geometry": plan.noise_px, "input_px": plan.noise_canvas_px},
    "estimates": {
      "coarse": f"argmax of the coarse heat-map at the phase-1 checkpoint (step {steps['coarse']})",
      "cascade": "the cascade of the final checkpoint",
    },
    "units": "input (canvas) px; σ over errors with |e| <= window_px, robust σ = 1.4826 MAD",
    "sigma_x": agg["sigma_x"],
    "robust_sigma_x": agg["robust_sigma_x"],
    "column_sigma_x": agg["column_sigma_x"],
    "column_robust_sigma_x": agg["column_robust_sigma_x"],
    "main_pool": pool,
    # The headline at the main pooling, clean labels: mean and std over seeds.
    "sigma_x_ratio_cascade_over_coarse": headline["mean"],
    "sigma_x_ratio_cascade_over_coarse_std": headline["std"],
    # PCK@0.05 (torso), all joints, % per seed (the seeds of `seeds`, in order).
    "pck_at_0.05": {
      m: [r["pck_at_0.05"][m]["torso_size"]["All"] for r in main_records]
      for m in ("coarse", "cascade")
    },
    "sigma_x_ratio_headline": headline,
    "sigma_x_ratio_headline_noise": _headline(main_noise, pool, "noise"),
    "sigma_x_ratios": agg["ratios"],
    # Kept errors beyond ±window_px/2 (share of errors, share of Σe²), from the histograms.
    "far_errors": agg["far_errors"],
    "pck_at_0.05_by_run": agg["pck_at_0.05"],
    "pck_gain_at_0.05": agg["pck_gain_at_0.05"],
    "pck_normalizers": PCK_NORMALIZERS,
    "convergence": agg["convergence"],
    "paper": PAPER,
    "targets": _targets(agg, pool),
    "missing_groups": [f"pool{p}/{g}" for g, p in expected if (g, p) not in present],
    "ignored_records": ignored,
    **provenance(records, mesh, command, figures, out_dir),
  }
  return publish(result, out_dir, STUDY, markdown)


def _headline(ratios: dict | None, pool: int, group: str) -> dict:
  base = {"pool": pool, "labels": group, "paper_head": PAPER["head_ratio"]}
  if not ratios:
    return {**base, "mean": None, "std": None, "n": 0, "per_seed": []}
  return {
    **base,
    **ratios["mean_over_joints"],
    "robust": ratios["robust_mean_over_joints"],
    "head": ratios["Head"],
    "shoulder": ratios["Shoulder"],
    "per_seed": ratios["per_seed"],
  }


def main_pool(base: ml_collections.ConfigDict) -> int:
  """The pooling of the headline numbers: the base config's, if one of `POOLS`
  (the CPU geometry's 4× has the paper's 8× cell / torso), else `MAIN_POOL`."""
  p = int(base.model.pool_factor)
  return p if p in POOLS else MAIN_POOL


def _targets(agg: dict, pool: int) -> dict:
  ratio = agg["ratios"].get("clean", {}).get(str(pool), {}).get("mean_over_joints", {})
  gain = agg["pck_gain_at_0.05"].get("clean", {}).get(str(pool), {})
  g = gain.get("torso_size", {}).get("All", {}) if gain else {}
  r_mean, g_mean = ratio.get("mean"), g.get("mean")
  return {
    "sigma_x_ratio_max": TARGETS["sigma_x_ratio_max"],
    "sigma_x_ratio_measured": r_mean,
    "sigma_x_ratio_met": None if r_mean is None else r_mean <= TARGETS["sigma_x_ratio_max"],
    "pck_gain_min_points": TARGETS["pck_gain_min_points"],
    "pck_gain_measured": g_mean,
    "pck_gain_met": None if g_mean is None else g_mean >= TARGETS["pck_gain_min_points"],
    "where": f"{pool}x pooling, clean labels; PCK@0.05 All joints, torso normalizer",
  }


# --- figures ----------------------------------------------------------------------------


def write_figures(records: list[dict], figures_dir: str) -> dict[str, str]:
  """Fig. 11-style histograms, Fig. 12-style PCK curves, loss curves: name -> path."""
  plt = tables.plt()
  by = {}
  for r in records:
    by.setdefault((int(r["pool"]), r["group"]), []).append(r)
  keys = sorted(by, key=lambda k: (GROUPS.index(k[1]), k[0]))
  paths = {}
  # Fig. 11: x-error histograms, head and shoulders, coarse vs cascade.
  fig, axes = plt.subplots(len(keys), 4, figsize=(13, 2.5 * len(keys)), squeeze=False)
  for i, (p, g) in enumerate(keys):
    recs = by[(p, g)]
    edges = np.asarray(recs[0]["hist_edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    for j, (col, m) in enumerate(
      [("Head", "coarse"), ("Head", "cascade"), ("Shoulder", "coarse"), ("Shoulder", "cascade")]
    ):
      ax = axes[i][j]
      counts = np.sum([r["histograms"][m][col] for r in recs], axis=0).astype(float)
      ax.bar(centers, counts / max(counts.sum() * width, 1.0), width=width, color=f"C{j % 2}")
      s = mean_std(r["column_sigma_x"][m][col] for r in recs)
      ax.set_title(f"{p}x {g} {m}, {col}: STD {fmt(s)}", fontsize=8)
      ax.set_xlabel("prediction error (x), input px", fontsize=7)
      ax.set_ylabel("probability", fontsize=7)
  fig.suptitle(
    "x error: coarse (phase 1) vs cascade (cf. paper Fig. 11), seeds pooled", fontsize=10
  )
  fig.tight_layout()
  paths["x_error_histograms"] = _save(fig, figures_dir, "x_error_histograms")
  # Fig. 12: PCK curves, head and wrist.
  groups = [g for g in GROUPS if any(k[1] == g for k in keys)]
  fig, axes = plt.subplots(len(groups), 2, figsize=(10, 4 * len(groups)), squeeze=False)
  for i, g in enumerate(groups):
    for k, col in enumerate(("Head", "Wrist")):
      ax = axes[i][k]
      for c, (p, gg) in enumerate(k2 for k2 in keys if k2[1] == g):
        for m, style in (("coarse", "--"), ("cascade", "-")):
          curves = [np.asarray(r["pck_curves"][m][col], float) for r in by[(p, gg)]]
          tables.plot_mean(ax, CURVE_ALPHAS, curves, style, f"{p}x {m}", f"C{c}")
      tables.pck_axes(ax, f"{col}, {g} labels: coarse (dashed) vs cascade (Fig. 12)", "torso_size")
  fig.tight_layout()
  paths["pck_curves"] = _save(fig, figures_dir, "pck_curves")
  paths["loss_curves"] = _loss_figure(by, keys, figures_dir)
  return paths


def _loss_figure(by: dict, keys: list, figures_dir: str) -> str:
  plt = tables.plt()
  names = (("train/e1", "train E1"), ("train/e2", "train E2"), ("eval/val_e1", "val E1"))
  fig, axes = plt.subplots(
    len(names), len(keys), figsize=(3.4 * len(keys), 7.5), squeeze=False, sharex="col"
  )
  for j, (p, g) in enumerate(keys):
    for i, (name, label) in enumerate(names):
      ax = axes[i][j]
      for s, r in enumerate(by[(p, g)]):
        steps, values = (np.asarray(x, float) for x in r["curves"][name])
        ok = np.isfinite(values) & (values > 0)
        style = "o-" if name.startswith("eval") else "-"
        ax.plot(steps[ok], values[ok], style, ms=3, lw=1, color=f"C{s}", label=f"seed {r['seed']}")
      st = by[(p, g)][0]["steps"]
      tables.curve_axes(ax, np.cumsum([st["coarse"], st["fine"]]))
      ax.grid(alpha=0.3)
      ax.set_title(f"{p}x {g}: {label}", fontsize=8)
      if i == len(names) - 1:
        ax.set_xlabel("step", fontsize=8)
  axes[0][0].legend(fontsize=6)
  fig.suptitle("loss curves (metrics.jsonl; gray: phase ends)", fontsize=10)
  fig.tight_layout()
  return _save(fig, figures_dir, "loss_curves")


def _save(fig, figures_dir: str, name: str) -> str:
  return save_figure(fig, figures_dir, f"{STUDY}_{name}")


# --- the Markdown summary -----------------------------------------------------------


def markdown(res: dict) -> str:
  """The summary: the numbers against the paper's, point by point, from `res`."""
  g = res["geometry"]
  lines = [
    "# Precision study: coarse vs cascade (paper Table 1, Fig. 11, Fig. 12)",
    "",
    f"- dataset: {res['dataset']}; input {g['input_hw'][1]}×{g['input_hw'][0]}, fine window "
    f"{g['context']} px, pooling {', '.join(f'{p}x' for p in g['pool']) or 'none yet'}",
    f"- torso (eval split, median): {g['torso_px']:.1f} px (paper: {PAPER_TORSO_PX:g}); "
    f"σ window ±{g['window_px']:.3g} px ({g['window_source']})",
    f"- steps coarse/fine/joint: {res['steps']['coarse']}/{res['steps']['fine']}/"
    f"{res['steps']['joint']}, batch {res['steps']['batch_size']}, {res['steps']['dtype']}",
    f"- seeds: {res['seeds']} (mean ± std over seeds)",
    f"- label noise of the 'noise' runs: σ = {res['label_noise_px']['input_px']:.3g} input px "
    "on the training labels only; every run is scored against the clean labels",
  ]
  lines += provenance_lines(res)
  lines += ["## Against the paper", ""]
  lines += _verdict_lines(res)
  lines += ["", "## σ of the x error (input px), per table column", ""]
  lines += _sigma_table(res)
  lines += [
    "",
    "(r: robust σ = 1.4826 × MAD.)",
    "",
    "## PCK@0.05 (torso normalizer; PCKh in brackets)",
    "",
  ]
  lines += _pck_table(res)
  lines += ["", "## Convergence (relative fall of each loss over its last tenth)", ""]
  lines += _convergence_table(res)
  lines += [
    "",
    f"A training curve counts as flat when its last tenth is less than {FLAT_TOLERANCE:.0%} "
    "below the tenth before, an evaluation curve when its last value is less than that below "
    "the one before. The learning rate decays to 1 % at each phase end, so flat ends are "
    "necessary, not sufficient: compare runs of different length.",
    "",
    *figure_lines(res),
  ]
  return "\n".join(lines) + "\n"


def _sigma_table(res: dict) -> list[str]:
  """Markdown rows: σ (robust σ) of the x error per table column, per run and estimate."""
  lines, cols = [], None
  for grp, pools in res["column_sigma_x"].items():
    for p, models in pools.items():
      if cols is None:
        cols = list(models["coarse"])
        lines += [
          "| run | estimate | " + " | ".join(cols) + " |",
          "|---|---|" + "---|" * len(cols),
        ]
      for m in ("coarse", "cascade"):
        cells = [fmt(models[m][c]) for c in cols]
        rob = res["column_robust_sigma_x"][grp][p][m]
        cells = [f"{a} (r {fmt(rob[c])})" for a, c in zip(cells, cols, strict=True)]
        lines.append(f"| {p}x {grp} | {m} | " + " | ".join(cells) + " |")
  return lines


def _pck_table(res: dict) -> list[str]:
  """Markdown rows: PCK@0.05 [PCKh@0.05] per table column, per run and estimate."""
  lines, first = [], True
  for grp, pools in res["pck_at_0.05_by_run"].items():
    for p, models in pools.items():
      cols = list(models["coarse"]["torso_size"])
      if first:
        lines += ["| run | estimate | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        first = False
      for m in ("coarse", "cascade"):
        cells = [
          f"{fmt(models[m]['torso_size'][c], '.1f')} [{fmt(models[m]['head_size'][c], '.1f')}]"
          for c in cols
        ]
        lines.append(f"| {p}x {grp} | {m} | " + " | ".join(cells) + " |")
  return lines


def _convergence_table(res: dict) -> list[str]:
  """Markdown table: each run's relative loss falls and whether it ends flat."""
  keys = ("train_e1_phase1", "val_e1_phase1", "train_e1_end", "train_e2_end", "val_e1_last_eval")
  lines = [
    "| run | train E1, phase 1 | val E1, phase 1 | train E1, end | train E2, end | val E1, end "
    "| flat |",
    "|---|---|---|---|---|---|---|",
  ]
  for pools in res["convergence"].values():
    for runs in pools.values():
      for name, c in runs.items():
        cells = [_pct(c.get(k)) for k in keys]
        lines.append(
          f"| {name} | " + " | ".join(cells) + f" | {'yes' if c.get('flat') else 'no'} |"
        )
  return lines


def _pct(x) -> str:
  return "n/a" if x is None else f"{100 * x:.1f} %"


def _verdict_lines(res: dict) -> list[str]:
  """The comparison with the paper as numbered Markdown items."""
  out = _sigma_verdict(res) + [_noise_verdict(res), _pck_verdict(res)]
  rat = res["sigma_x_ratios"].get("clean", {})
  if len(rat) > 1:
    parts = [
      f"{p}x {fmt(r['mean_over_joints'])}" for p, r in sorted(rat.items(), key=lambda x: int(x[0]))
    ]
    out.append(
      "σ ratio by pooling (clean): " + ", ".join(parts) + ". The paper (Fig. 12): the "
      "cascade helps most at 8x and 16x."
    )
  flat = [
    c["flat"]
    for pools in res["convergence"].values()
    for runs in pools.values()
    for c in runs.values()
  ]
  if flat:
    out.append(
      f"Converged: {sum(flat)} of {len(flat)} runs have flat loss curves at the end (table "
      "below, figure `loss_curves`)."
    )
  # Numbered items; a line starting with two spaces continues the item before.
  lines, n = [], 0
  for line in out:
    if line.startswith("  "):
      lines.append("   " + line.strip())
    else:
      n += 1
      lines.append(f"{n}. {line}")
  return lines


def _sigma_verdict(res: dict) -> list[str]:
  """The headline σ ratio at the main pooling against Fig. 11 (and its columns' σ)."""
  pool = res["main_pool"]
  h = res["sigma_x_ratio_headline"]
  if h.get("mean") is None:
    return [f"σ ratio at {pool}x (clean labels): not measured yet."]
  met = "reached" if res["targets"]["sigma_x_ratio_met"] else "NOT reached"
  sig = res["column_sigma_x"]["clean"][str(pool)]
  return [
    f"σx cascade / coarse at {pool}x, clean labels, mean over joints: {fmt(h)} "
    f"(robust σ: {fmt(h['robust'])}); head {fmt(h['head'])}, shoulders {fmt(h['shoulder'])}. "
    f"Paper (Fig. 11): head {PAPER['head_ratio']:.2f} (3.13 → 1.09 px), shoulders "
    f"{PAPER['shoulder_ratio']:.2f} (4.25 → 2.43 px). Target ratio ≤ "
    f"{TARGETS['sigma_x_ratio_max']}: {met}.",
    f"  Head σx: coarse {fmt(sig['coarse'].get('Head'))} → cascade "
    f"{fmt(sig['cascade'].get('Head'))} px (paper 3.13 → 1.09 at FLIC's geometry); shoulders "
    f"{fmt(sig['coarse'].get('Shoulder'))} → {fmt(sig['cascade'].get('Shoulder'))} px "
    "(paper 4.25 → 2.43).",
    *_far_line(res, pool),
  ]


def _far_line(res: dict, pool: int) -> list[str]:
  """How much of each plain σ the errors beyond ±window/2 make (empty without them)."""
  far = res.get("far_errors", {}).get("clean", {}).get(str(pool))
  if not far:
    return []
  pct = lambda m, k: fmt(far[m][k], ".1%")  # noqa: E731
  return [
    f"  Errors beyond ±{res['geometry']['window_px'] / 2:.3g} px (half the σ window): coarse "
    f"{pct('coarse', 'share')} of the kept errors, {pct('coarse', 'variance_share')} of their "
    f"Σe²; cascade {pct('cascade', 'share')}, {pct('cascade', 'variance_share')}: the part of "
    "the plain σ that the robust σ leaves out."
  ]


def _noise_verdict(res: dict) -> str:
  """The σ ratio with label noise against the clean one, beyond the seeds' spread or not."""
  h, hn = res["sigma_x_ratio_headline"], res["sigma_x_ratio_headline_noise"]
  if hn.get("mean") is None:
    return "With label noise: not measured yet."
  noise = res["label_noise_px"]["input_px"]
  effect = ""
  if h.get("mean") is not None:
    d, spread = hn["mean"] - h["mean"], math.hypot(hn["std"], h["std"])
    effect = (
      ": the noise weakens the cascade's gain"
      if d > spread
      else ": the gain is larger with noise"
      if d < -spread
      else ": no difference beyond the seeds' spread"
    )
  head = res["column_sigma_x"]["noise"][str(res["main_pool"])]["cascade"].get("Head")
  return (
    f"With label noise (σ = {noise:.3g} px on the training labels): σ ratio {fmt(hn)} against "
    f"{fmt(h)} with clean labels{effect}. The cascade's head σx is {fmt(head)} px for an "
    f"injected σ of {noise:.3g} px (the paper's cascade came close to FLIC's measured label "
    "noise, Table 1)."
  )


def _pck_verdict(res: dict) -> str:
  """The PCK@0.05 gain of the cascade at the main pooling against the target."""
  pool = res["main_pool"]
  gain = res["pck_gain_at_0.05"].get("clean", {}).get(str(pool))
  if not gain:
    return f"PCK@0.05 gain at {pool}x: not measured yet."
  met = "reached" if res["targets"]["pck_gain_met"] else "NOT reached"
  pck = res["pck_at_0.05_by_run"]["clean"][str(pool)]
  return (
    f"PCK@0.05 at {pool}x, all joints: coarse "
    f"{fmt(pck['coarse']['torso_size']['All'], '.1f')}"
    f" → cascade {fmt(pck['cascade']['torso_size']['All'], '.1f')}, gain "
    f"{fmt(gain['torso_size']['All'], '.1f')} points (head "
    f"{fmt(gain['torso_size'].get('Head'), '.1f')}, wrist "
    f"{fmt(gain['torso_size'].get('Wrist'), '.1f')}). Target +{TARGETS['pck_gain_min_points']:g}"
    f" points: {met}."
  )
