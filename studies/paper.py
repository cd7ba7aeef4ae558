"""The paper's experiments (§5): train the runs they need, evaluate, and write each
experiment's figures and table (`run_experiments`).

  python -m experiments.paper --experiment=all --config=heatpose_jax/configs/synthetic.py \
      --workdir=runs/paper [--seeds=3] [--max_parallel=2] [--config.data_dir=...]

The experiments (`EXPERIMENTS`, run in that order by 'all'):

  pooling          Fig. 9 + Table 1: the coarse model at 4/8/16x pooling: all-joint
                   PCK curves and the σ of the x error beside the label noise.
  cascade          Fig. 11 + 12: coarse vs cascade at each pooling: x-error
                   histograms (head, shoulders) and head / wrist PCK curves.
  shared_features  Fig. 13 / 14a: shared-feature cascade vs the standard cascade
                   (parameter counts, wrist PCK).
  spatial_dropout  Fig. 14b: spatial vs standard vs no dropout: wrist PCK, train
                   and validation E1 curves.
  timing           Table 2: forward ms per image of the coarse and fine models.
  mpii_table       Table 4 + Fig. 16: scale-normalized vs unnormalized training,
                   each scored on normalized and unnormalized test crops.

Runs are trained and reused as `studies.runs` describes; predictions are cached
by `studies.predictions`. Scores are in the canvas frame (input pixels), dropout
off, on `config.eval_split`, argmax decoding as configured
(`config.eval.coarse_refine`). Outputs: `workdir/<experiment>/{table.md,
table.json, *.png}` and `workdir/summary.md`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from heatpose_jax import from_config
from heatpose_jax.core import sharding
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import metrics
from heatpose_jax.model import model_stats
from heatpose_jax.training import metric_writer
from studies import benchmark, tables
from studies import predictions as preds_lib
from studies import runs as runs_lib
from studies.runs import MAIN_POOL, POOLS, Run
from studies.tables import Table

EXPERIMENTS = ("pooling", "cascade", "shared_features", "spatial_dropout", "timing", "mpii_table")
TIMING_BATCH_SIZES = (1, 32)
HIST_RANGE_PX = preds_lib.HIST_RANGE_PX


def runs_of(
  experiment: str, base: ml_collections.ConfigDict, pools: Sequence[int] = POOLS
) -> tuple[str, ...]:
  """The runs an experiment needs (run names, see `runs.run_overrides`)."""
  if experiment not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {experiment!r}; known: {EXPERIMENTS} or 'all'")
  main = f"pool{MAIN_POOL}"
  return {
    "pooling": tuple(f"pool{p}" for p in pools),
    "cascade": tuple(f"pool{p}" for p in pools),
    "shared_features": (main, f"standard{MAIN_POOL}"),
    "spatial_dropout": (main, f"stddropout{MAIN_POOL}", f"nodropout{MAIN_POOL}"),
    "timing": (),
    "mpii_table": (f"pool{runs_lib.table_pool(base, pools)}", "unnormalized"),
  }[experiment]


@dataclasses.dataclass
class Context:
  """What every experiment reads: the base config, its runs and their predictions."""

  base: ml_collections.ConfigDict
  workdir: str
  seeds: int
  runs: dict[tuple[str, int], Run]
  cache: preds_lib.PredictionCache
  header: dict[str, str]
  pools: tuple[int, ...] = POOLS
  timing_iters: int = 50
  timing_batch_sizes: tuple[int, ...] = TIMING_BATCH_SIZES

  @property
  def mesh(self) -> Mesh:
    return self.cache.mesh

  @property
  def skeleton(self) -> joints_lib.Skeleton:
    return from_config.skeleton(self.base)

  @property
  def alphas(self) -> np.ndarray:
    return np.linspace(0.0, float(self.base.eval.curve_max), 21)

  @property
  def thresholds(self) -> tuple[float, ...]:
    """The smallest and the largest table threshold (one if they are equal)."""
    t = sorted(float(x) for x in self.base.eval.thresholds)
    return tuple(dict.fromkeys((t[0], t[-1])))

  def run(self, kind: str, seed_index: int) -> Run:
    return self.runs[(kind, seed_index)]

  def preds(self, kind: str, seed_index: int, step: int | None = None, **kw):
    return self.cache.predictions(self.run(kind, seed_index), step, **kw)

  def pck(self, preds, key: str, alphas=None) -> dict[str, np.ndarray]:
    a = self.alphas if alphas is None else alphas
    return preds_lib.pck_columns(preds, key, self.skeleton, self.base.eval.normalizer, a)


def pooling(ctx: Context, out_dir: str) -> Table:
  """Fig. 9 and Table 1: the coarse model at each pooling."""
  skel, base = ctx.skeleton, ctx.base
  cols = skel.table_indices()
  ta = ctx.thresholds
  columns = [f"σ {c}" for c in cols] + ["removed"] + [f"PCK@{a} All" for a in ta]
  t = Table("pooling: coarse-model precision vs pooling (paper Fig. 9, Table 1)", columns)
  src = from_config.eval_source(preds_lib.eval_config(base), ctx.workdir)
  noise = preds_lib.label_noise_sigma(
    src,
    skel,
    cols,
    crop_mode=base.crop_mode,
    canvas_hw=tuple(base.input_hw),
    image_scale=base.image_scale or None,
    box_scale=base.box_scale or None,
  )
  for c in cols:
    t.add("label noise (dataset)", f"σ {c}", None if noise is None else noise[c])
  for c in ["removed"] + [f"PCK@{a} All" for a in ta]:
    t.add("label noise (dataset)", c, None)
  fig, ax = tables.plt().subplots(figsize=(5, 4))
  for p in ctx.pools:
    curves = {"phase 1": [], "final": []}
    for s in range(ctx.seeds):
      run = ctx.run(f"pool{p}", s)
      steps = {"phase 1": from_config.phase_end(run.config, "coarse"), "final": None}
      for label, step in steps.items():
        row = f"{p}x coarse ({'phase 1, step ' + str(step) if step else 'of the final model'})"
        preds = ctx.preds(f"pool{p}", s, step)
        removed = 0
        for c, idx in cols.items():
          sig, r = preds_lib.sigma_x(preds, "coarse", idx)
          t.add(row, f"σ {c}", sig)
          removed += r
        t.add(row, "removed", removed)
        for a, v in zip(ta, ctx.pck(preds, "coarse", ta)["All"], strict=True):
          t.add(row, f"PCK@{a} All", v)
        curves[label].append(ctx.pck(preds, "coarse")["All"])
    tables.plot_mean(ax, ctx.alphas, curves["phase 1"], "-", f"{p}x pool")
    tables.plot_mean(ax, ctx.alphas, curves["final"], ":", f"{p}x pool, after joint training")
  tables.pck_axes(ax, "coarse heat-map model, all joints (Fig. 9)", base.eval.normalizer)
  fig.tight_layout()
  tables.save(fig, out_dir, "pck_all_joints.png", t)
  t.notes += [
    "σ: standard deviation of the x error (input px) pooled over the column's joints, "
    f"errors beyond ±{HIST_RANGE_PX:g} px removed (their total count: 'removed').",
    "label noise: σ of (joints − joints_clean) in x, input px, measured on the eval split "
    "(synthetic people); n/a where the dataset has no clean labels (FLIC, MPII).",
    "phase 1 = the checkpoint at the end of the coarse phase (the coarse model trained alone); "
    "'of the final model' = the coarse estimate after the joint phase.",
  ]
  return t


def cascade(ctx: Context, out_dir: str) -> Table:
  """Fig. 11 and 12: coarse vs cascade at each pooling."""
  skel = ctx.skeleton
  cols = skel.table_indices()
  groups = {"Head": cols["Head"], "Shoulder": cols["Shoulder"]}
  ta = ctx.thresholds
  columns = [f"{k} {g}" for g in groups for k in ("σ", "removed")]
  columns += [f"PCK@{a} {c}" for a in ta for c in ("Head", "Wrist")]
  t = Table("cascade: coarse vs cascade (paper Fig. 11, Fig. 12)", columns)
  plt = tables.plt()
  n = len(ctx.pools)
  hist_fig, hist_axes = plt.subplots(n, 4, figsize=(13, 2.6 * n), squeeze=False)
  curve_fig, curve_axes = plt.subplots(1, 2, figsize=(10, 4))
  for i, p in enumerate(ctx.pools):
    color = f"C{i}"
    errs = {(g, m): [] for g in groups for m in ("coarse", "cascade")}
    curves = {(c, m): [] for c in ("Head", "Wrist") for m in ("coarse", "cascade")}
    for s in range(ctx.seeds):
      run = ctx.run(f"pool{p}", s)
      estimates = {
        "coarse": ctx.preds(f"pool{p}", s, from_config.phase_end(run.config, "coarse")),
        "cascade": ctx.preds(f"pool{p}", s),
      }
      for m, preds in estimates.items():
        row = f"{p}x {'coarse (phase 1)' if m == 'coarse' else 'cascade'}"
        for g, idx in groups.items():
          sig, r = preds_lib.sigma_x(preds, m, idx)
          t.add(row, f"σ {g}", sig)
          t.add(row, f"removed {g}", r)
          errs[(g, m)].append(preds_lib.x_errors(preds, m, idx))
        at, full = ctx.pck(preds, m, ta), ctx.pck(preds, m)
        for c in ("Head", "Wrist"):
          for a, v in zip(ta, at[c], strict=True):
            t.add(row, f"PCK@{a} {c}", v)
          curves[(c, m)].append(full[c])
    for j, (g, m) in enumerate(errs):
      _error_histogram(hist_axes[i][j], np.concatenate(errs[(g, m)]), f"{p}x {m}, {g}", color)
    for k, c in enumerate(("Head", "Wrist")):
      for m, style in (("coarse", "--"), ("cascade", "-")):
        tables.plot_mean(curve_axes[k], ctx.alphas, curves[(c, m)], style, f"{p}x {m}", color)
  for k, c in enumerate(("Head", "Wrist")):
    tables.pck_axes(
      curve_axes[k], f"{c}: coarse (dashed) vs cascade (solid)", ctx.base.eval.normalizer
    )
  hist_fig.suptitle("x error: coarse model (phase 1) vs cascade (Fig. 11)", fontsize=10)
  hist_fig.tight_layout()
  curve_fig.tight_layout()
  tables.save(hist_fig, out_dir, "x_error_histograms.png", t)
  tables.save(curve_fig, out_dir, "pck_head_wrist.png", t)
  head = ", ".join(skel.model_joints[j] for j in cols["Head"])
  t.notes += [
    f"Head = {head}; Shoulder = both shoulders; σ in input px, |e| ≤ {HIST_RANGE_PX:g} kept.",
    "coarse = argmax of the phase-1 checkpoint (coarse model alone); cascade = final model.",
  ]
  return t


def _error_histogram(ax, e: np.ndarray, title: str, color: str) -> None:
  """Fig. 11's panel: the density of the x errors `e` (input px) within ±HIST_RANGE_PX,
  titled with their STD and how many fell outside."""
  bins = np.arange(-HIST_RANGE_PX, HIST_RANGE_PX + 1.0, 1.0)
  kept = e[np.abs(e) <= HIST_RANGE_PX]
  ax.hist(kept, bins=bins, density=True, color=color, alpha=0.8)
  std = float(np.std(kept)) if kept.size else float("nan")
  ax.set_title(f"{title}: STD {std:.2f} ({e.size - kept.size} out)", fontsize=8)
  ax.set_xlabel("prediction error (x), input px", fontsize=8)
  ax.set_ylabel("probability", fontsize=8)


def _add_wrist_all(t: Table, row: str, at: dict[str, np.ndarray], alphas: Sequence[float]) -> None:
  for a, v in zip(alphas, at["Wrist"], strict=True):
    t.add(row, f"PCK@{a} Wrist", v)
  t.add(row, f"PCK@{alphas[-1]} All", at["All"][-1])


def shared_features(ctx: Context, out_dir: str) -> Table:
  """Fig. 13 / 14a: shared-feature cascade vs the standard (image-patch) cascade."""
  ta = ctx.thresholds
  columns = ["params coarse", "params fine", "params total"]
  columns += [f"PCK@{a} Wrist" for a in ta] + [f"PCK@{ta[-1]} All"]
  t = Table(
    f"shared_features: shared features vs standard cascade at {MAIN_POOL}x (paper Fig. 13, 14a)",
    columns,
  )
  kinds = {
    f"pool{MAIN_POOL}": "shared features (joint training)",
    f"standard{MAIN_POOL}": "standard cascade (greedy)",
  }
  fig, ax = tables.plt().subplots(figsize=(5, 4))
  for kind, label in kinds.items():
    curves = {"cascade": [], "coarse": []}
    for s in range(ctx.seeds):
      shapes = from_config.abstract_params(ctx.run(kind, s).config, ctx.mesh)
      nc, nf = model_stats.count_params(shapes["coarse"]), model_stats.count_params(shapes["fine"])
      t.add(label, "params coarse", nc)
      t.add(label, "params fine", nf)
      t.add(label, "params total", nc + nf)
      preds = ctx.preds(kind, s)
      _add_wrist_all(t, label, ctx.pck(preds, "cascade", ta), ta)
      for m in curves:
        curves[m].append(ctx.pck(preds, m)["Wrist"])
    tables.plot_mean(ax, ctx.alphas, curves["cascade"], "-", label)
    tables.plot_mean(ax, ctx.alphas, curves["coarse"], ":", f"{label}, coarse only")
  tables.pck_axes(ax, f"wrist, {MAIN_POOL}x pooling (Fig. 14a)", ctx.base.eval.normalizer)
  fig.tight_layout()
  tables.save(fig, out_dir, "pck_wrist.png", t)
  t.notes += [
    "The standard cascade's fine model crops the LCN image pyramid and has an extra conv "
    "sized so that its parameter count matches (models.matched_standard_features).",
    f"The paper compares at 4x pooling; we use {MAIN_POOL}x, the pooling of the other comparisons.",
  ]
  return t


def spatial_dropout(ctx: Context, out_dir: str) -> Table:
  """Fig. 14b: SpatialDropout vs standard dropout vs none; wrist PCK and E1 curves."""
  ta = ctx.thresholds
  columns = [f"PCK@{a} Wrist" for a in ta] + [f"PCK@{ta[-1]} All", "train E1", "val E1"]
  t = Table(f"spatial_dropout: dropout variants at {MAIN_POOL}x (paper Fig. 14b)", columns)
  kinds = (f"pool{MAIN_POOL}", f"stddropout{MAIN_POOL}", f"nodropout{MAIN_POOL}")
  plt = tables.plt()
  fig, ax = plt.subplots(figsize=(5, 4))
  loss_fig, loss_ax = plt.subplots(figsize=(6, 4))
  for i, kind in enumerate(kinds):
    label = f"dropout: {ctx.run(kind, 0).config.model.dropout}"
    curves = []
    for s in range(ctx.seeds):
      run = ctx.run(kind, s)
      preds = ctx.preds(kind, s)
      _add_wrist_all(t, label, ctx.pck(preds, "cascade", ta), ta)
      curves.append(ctx.pck(preds, "cascade")["Wrist"])
      train_steps, train_e1 = metric_writer.read_scalars(run.directory, ["train/e1"])["train/e1"]
      steps = runs_lib.checkpoint_steps(run.directory)
      val = []
      for step in steps:
        p = ctx.preds(kind, s, step)
        val.append(float(p["e1_sum"].sum() / max(p["e1_count"].sum(), 1.0)))
      t.add(label, "train E1", train_e1[-1] if train_e1.size else None)
      t.add(label, "val E1", val[-1])
      suffix = f" (seed {run.config.seed})" if ctx.seeds > 1 else ""
      color = f"C{i}"
      loss_ax.plot(
        train_steps, train_e1, "-", color=color, alpha=0.6, label=f"{label} train{suffix}"
      )
      loss_ax.plot(steps, val, "o--", color=color, label=f"{label} val{suffix}")
    tables.plot_mean(ax, ctx.alphas, curves, "-", label, f"C{i}")
  tables.pck_axes(ax, f"wrist, cascade, {MAIN_POOL}x pooling (Fig. 14b)", ctx.base.eval.normalizer)
  loss_ax.set_xlabel("step")
  loss_ax.set_ylabel("coarse loss E1")
  loss_ax.grid(alpha=0.3)
  loss_ax.legend(fontsize=6)
  bounds = from_config.phase_bounds(ctx.run(kinds[0], 0).config)[:-1]
  tables.curve_axes(loss_ax, [end for _, _, end in bounds])
  fig.tight_layout()
  loss_fig.tight_layout()
  tables.save(fig, out_dir, "pck_wrist.png", t)
  tables.save(loss_fig, out_dir, "loss_curves.png", t)
  t.notes += [
    "train E1: the coarse loss logged during training (metrics.jsonl train/e1: augmented "
    "batches, dropout on in the coarse and joint phases); the table has the last value logged.",
    "val E1: the same loss on the un-augmented eval split, dropout off, at every kept "
    "checkpoint (vertical lines: phase boundaries).",
  ]
  return t


def timing(ctx: Context, out_dir: str) -> Table:
  """Table 2: compiled, warm forward milliseconds per image (random parameters)."""
  base, batch_sizes = ctx.base, ctx.timing_batch_sizes
  columns = []
  for b in batch_sizes:
    columns += [f"coarse ms (batch {b})", f"fine ms (batch {b})", f"cascade ms (batch {b})"]
  t = Table("timing: forward-propagation time per image (paper Table 2)", columns)
  hw = tuple(base.input_hw)
  one_device = sharding.make_mesh(ctx.mesh.devices.flat[:1])
  ms = {}
  for p in ctx.pools:
    cfg = preds_lib.eval_config(
      runs_lib.apply_overrides(base, {"model.pool_factor": p, "model.standard_cascade": False})
    )
    for b in batch_sizes:
      r = benchmark.forward_stats(
        cfg, b, one_device, iters=ctx.timing_iters, warmup=min(3, ctx.timing_iters)
      )
      row = f"{p}x pool"
      t.add(row, f"coarse ms (batch {b})", r["coarse_ms_per_image"])
      t.add(row, f"fine ms (batch {b})", r["fine_ms_per_image"])
      t.add(row, f"cascade ms (batch {b})", r["cascade_ms_per_image"])
      ms[(p, b)] = (r["coarse_ms_per_image"], r["fine_ms_per_image"])
  fig, axes = tables.plt().subplots(1, len(batch_sizes), figsize=(4.5 * len(batch_sizes), 3.5))
  x = np.arange(len(ctx.pools))
  device = one_device.devices.flat[0].device_kind
  for ax, b in zip(np.atleast_1d(axes), batch_sizes, strict=True):
    c = np.array([ms[(p, b)][0] for p in ctx.pools])
    f = np.array([ms[(p, b)][1] for p in ctx.pools])
    ax.bar(x, c, label="coarse")
    ax.bar(x, f, bottom=c, label="fine")
    ax.set_xticks(x, [f"{p}x" for p in ctx.pools])
    ax.set_ylabel("ms per image")
    ax.set_title(f"batch {b}, {device}", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  tables.save(fig, out_dir, "forward_ms.png", t)
  t.notes += [
    f"{base.dataset} model at {hw[1]}x{hw[0]} (W x H), {base.dtype}, random parameters "
    "(the time does not depend on the weights); jit-compiled, warm, inputs on the device, "
    f"median of {ctx.timing_iters} calls (studies.benchmark.forward_stats).",
    "cascade = inference.predict (coarse model, argmax, crops, fine model, decoding); coarse and "
    "cascade are timed call for call, fine = the median per-pair difference (clipped at 0). "
    "The paper times FLIC models at batch 1 on a K40; its Table 2 is per image.",
  ]
  return t


def mpii_table(ctx: Context, out_dir: str) -> Table:
  """Table 4 + Fig. 16: scale-normalized vs unnormalized training and testing."""
  skel, base = ctx.skeleton, ctx.base
  head = base.eval.normalizer == "head_size"
  alpha = metrics.MPII_TABLE_THRESHOLD if head else ctx.thresholds[-1]
  cols = list(skel.table_indices())
  if len(skel.table) > 4:
    cols += ["UBody", "Total"]
  t = Table(f"mpii_table: PCK{'h' if head else ''}@{alpha} (paper Table 4, Fig. 16)", cols)
  p = runs_lib.table_pool(base, ctx.pools)
  norm = f"pool{p}"
  un = ctx.run("unnormalized", 0).config
  crops = {
    "normalized": {"crop_mode": base.crop_mode, "image_scale": base.image_scale},
    "unnormalized": {"crop_mode": "unnormalized", "image_scale": un.image_scale},
  }
  rows = (
    (norm, "normalized", "scale normalized"),
    (norm, "unnormalized", "scale normalized (test only)"),
    ("unnormalized", "unnormalized", "unnormalized"),
    ("unnormalized", "normalized", "unnormalized (normalized test)"),
  )
  fig, ax = tables.plt().subplots(figsize=(5, 4))
  for kind, crop, label in rows:
    curves = []
    for s in range(ctx.seeds):
      preds = ctx.preds(kind, s, **crops[crop])
      rates, counts = metrics.pck_curve(
        preds["cascade"],
        preds["joints"],
        preds["joints_valid"] > 0,
        preds[base.eval.normalizer],
        [alpha],
      )
      row = metrics.table(rates[0], counts, skel, from_config.dataset_spec(base).pools)
      for c in cols:
        t.add(label, c, row[c])
      curves.append(ctx.pck(preds, "cascade")["All"])
    tables.plot_mean(ax, ctx.alphas, curves, "-" if kind == norm else "--", f"{p}x {label}")
  tables.pck_axes(ax, "all joints (Fig. 16)", base.eval.normalizer)
  fig.tight_layout()
  tables.save(fig, out_dir, "pck_all_joints.png", t)
  t.notes += [
    f"Both models at {p}x pooling, cascade estimates. 'normalized' test crops use the base "
    f"config's crop mode ({base.crop_mode!r}); 'unnormalized' crops use crop_mode 'unnormalized' "
    f"with image_scale {un.image_scale or 1 / 3:.3g} canvas px per image px (the unnormalized "
    "run's).",
    "Rows: model (training crops) and, in parentheses, the test crops when they differ.",
  ]
  return t


EXPERIMENT_FNS: dict[str, Callable[[Context, str], Table]] = {
  "pooling": pooling,
  "cascade": cascade,
  "shared_features": shared_features,
  "spatial_dropout": spatial_dropout,
  "timing": timing,
  "mpii_table": mpii_table,
}


def _header(ctx_runs, kinds, base, seeds: int, command: str, num_eval: int | None, mesh) -> dict:
  dataset = base.tfds_name + (
    f"/{base.tfds_config}" if base.tfds_config else " (default builder config)"
  )
  runs = []
  for k in kinds:
    r = ctx_runs[(k, 0)].config
    steps = "/".join(str(r.phases[n].steps) for n in r.phase_order)
    runs.append(f"{k} (steps {steps})")
  d = mesh.devices.flat[0]
  return {
    "dataset": f"{dataset}, eval split {base.eval_split!r}"
    + (f" ({num_eval} examples)" if num_eval is not None else ""),
    "seeds": ", ".join(str(int(base.seed) + s) for s in range(seeds))
    + (" (mean ± std over seeds)" if seeds > 1 else ""),
    "runs (steps coarse/fine/joint)": ", ".join(runs) if runs else "none (random parameters)",
    "device": f"{d.device_kind} ({d.platform}, {mesh.devices.size} device(s))",
    "command": f"`{command}`",
  }


def run_experiments(
  config: ml_collections.ConfigDict,
  workdir: str,
  experiments: Sequence[str],
  *,
  pools: Sequence[int] = POOLS,
  seeds: int = 1,
  max_parallel: int = 0,
  train_args: Sequence[str] = (),
  checkpoints_per_run: int = 10,
  timing_iters: int = 50,
  timing_batch_sizes: Sequence[int] = TIMING_BATCH_SIZES,
  command: str = "",
  mesh: Mesh | None = None,
) -> dict[str, dict]:
  """Trains the runs the experiments need, then writes each experiment's outputs.

  Args:
    config: the base config (the command line's, overrides applied).
    workdir: runs go to `workdir/runs/`, experiment `e` to `workdir/e/`.
    experiments: names from `EXPERIMENTS` (or ['all']).
    pools: the pooling factors of pooling, cascade and timing (must hold
      `MAIN_POOL` for the experiments that compare at it).
    seeds: runs per configuration (seeds config.seed + 0 … seeds − 1).
    max_parallel: 0 trains in this process; N > 0 in N `experiments.train`
      subprocesses at a time, with `train_args` (`--config=...` and the command
      line's `--config.*` overrides, which must give `config`).
    checkpoints_per_run: about this many checkpoints per run, all kept.
    timing_iters: timed calls per measurement of `timing`.
    timing_batch_sizes: the batch sizes `timing` measures.
    command: the command line, quoted in every table.
    mesh: the data mesh (default: every device).

  Returns:
    experiment -> its table.json content.
  """
  names = list(EXPERIMENTS) if "all" in experiments else list(experiments)
  pools = tuple(int(p) for p in pools)
  _check_experiments(config, names, pools, seeds)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh() if mesh is None else mesh
  kinds = list(dict.fromkeys(k for n in names for k in runs_of(n, config, pools)))
  runs = _make_runs(config, workdir, kinds, seeds, pools, checkpoints_per_run)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  runs_lib.train_runs(
    list(runs.values()), max_parallel=max_parallel, mesh=mesh, train_args=train_args, cwd=repo
  )
  cache = preds_lib.PredictionCache(mesh)
  ctx = Context(
    config, workdir, seeds, runs, cache, {}, pools, timing_iters, tuple(timing_batch_sizes)
  )
  results = {}
  for n in names:
    table = _run_experiment(n, ctx, command)
    if jax.process_index() == 0:
      results[n] = table
  if jax.process_index() == 0:
    tables.write_summary(workdir, EXPERIMENTS)
  return results


def _run_experiment(name: str, ctx: Context, command: str) -> dict | None:
  """Experiment `name` on `ctx` with its own header: `workdir/<name>/`'s files and
  its table.json content (process 0; None elsewhere)."""
  out_dir = os.path.join(ctx.workdir, name)
  kinds = runs_of(name, ctx.base, ctx.pools)
  num_eval = None
  if kinds:
    num_eval = int(ctx.cache.predictions(ctx.runs[(kinds[0], 0)])["joints"].shape[0])
  header = _header(ctx.runs, kinds, ctx.base, ctx.seeds, command, num_eval, ctx.mesh)
  ctx = dataclasses.replace(ctx, header=header)
  logging.info("experiment %s", name)
  table = EXPERIMENT_FNS[name](ctx, out_dir)
  if jax.process_index() != 0:
    return None
  result = table.write(out_dir, header)
  print(f"{name}: {out_dir}/table.md", flush=True)
  return result


def _check_experiments(config, names: list[str], pools: tuple[int, ...], seeds: int) -> None:
  """ValueError for an unknown experiment, seeds < 1, pools outside `POOLS` or without
  the `MAIN_POOL` an experiment compares at, or no coarse phase where one is needed."""
  for n in names:
    runs_of(n, config, pools)  # validates the name
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  if not pools or any(p not in POOLS for p in pools):
    raise ValueError(f"pools must be a non-empty subset of {POOLS}, got {pools}")
  needs_main = {"shared_features", "spatial_dropout"} & set(names)
  if needs_main and MAIN_POOL not in pools:
    raise ValueError(f"{sorted(needs_main)} compare at {MAIN_POOL}x: pools must include it")
  if {"pooling", "cascade"} & set(names) and not from_config.phase_end(config, "coarse"):
    raise ValueError("pooling and cascade need the coarse phase: config.phases.coarse has no steps")


def _make_runs(config, workdir: str, kinds, seeds: int, pools, checkpoints_per_run: int) -> dict:
  """(kind, seed index) -> `runs_lib.make_run` of every kind and seed."""
  scale = runs_lib.unnormalized_image_scale(config) if "unnormalized" in kinds else 0.0
  return {
    (k, s): runs_lib.make_run(
      config,
      workdir,
      k,
      s,
      checkpoints_per_run=checkpoints_per_run,
      unnormalized_scale=scale,
      pools=pools,
    )
    for k in kinds
    for s in range(seeds)
  }
