"""The regularization claims (paper §3.2, §4.2, Fig. 14) where they can show: a small
training set trained long enough to over-fit.

  python -m experiments.regularization_study --config=heatpose_jax/configs/synthetic.py:paper,bf16 \
      --workdir=runs/regularization --out_dir=docs/results --figures_dir=docs/figures \
      [--num_train=300] [--groups=spatial_dropout,standard_dropout,no_dropout,standard_cascade] \
      [--seeds=0,1,2]

The training split is cut to its first `num_train` images by building the
synthetic dataset config of the base config with `num_train` changed
(`synthetic_dataset.prepare(base, data_dir, num_train=...)`: the same renders,
the same test split; nothing in the library changes). Variants (`VARIANTS`), each
the run of `studies.runs` named beside it, 8x pooling:

  spatial_dropout   the paper's model: shared features, joint training, SpatialDropout
  standard_dropout  the same with standard (per-activation) dropout
  no_dropout        the same without dropout
  standard_cascade  Fig. 13's greedily trained image-patch cascade, SpatialDropout

Every run evaluates about `evals_per_run` (>= 10) times (`eval_every`), so
metrics.jsonl holds its validation curves: `eval/val_e1` (the coarse loss on the
un-augmented eval split, dropout off) and the cascade's PCK(h) at the config's
largest threshold (all joints and wrist). After training, the final checkpoint is
also predicted on the *training* images (un-augmented, dropout off): the train
E1 and PCK beside the validation ones measure the over-fitting directly.

As in `studies.precision`, each run becomes a small record
(`OUT_DIR/regularization_records/<run>.json`) that is reused when its config
matches, so groups can be run piece by piece; `regularization.json`,
`regularization.md` (with a verdict written from the numbers) and
`regularization_curves.png` come from every matching record present.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from heatpose_jax import from_config
from heatpose_jax.data import datasets, features
from heatpose_jax.data import synthetic_dataset as synth
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.training import metric_writer
from studies import precision, tables
from studies import predictions as preds_lib
from studies import records as records_lib
from studies import runs as runs_lib
from studies.records import fmt

STUDY = "regularization"
# group -> (the `studies.runs` run it is, its label)
VARIANTS = {
  "spatial_dropout": ("pool8", "SpatialDropout"),
  "standard_dropout": ("stddropout8", "standard dropout"),
  "no_dropout": ("nodropout8", "no dropout"),
  "standard_cascade": ("standard8", "standard cascade"),
}
GROUPS = tuple(VARIANTS)
DEFAULT_NUM_TRAIN = 300
EVALS_PER_RUN = 12
MIN_EVALS = 10
# A variant over-fits when its final validation E1 is more than this above its minimum.
OVERFIT_RISE = 0.01
# A validation E1 this many times the training-set E1: the models fit the training
# images far better than held-out ones (r1, 300 images: 1.5–1.7×; r3, 100: 3.6–5.3×).
LARGE_GAP = 2.0


# --- the small training set ----------------------------------------------------------


def _parse_value(text: str, default: Any) -> Any:
  if isinstance(default, bool):
    return text == "True"
  if isinstance(default, tuple | list):
    kind = type(default[0]) if default else float
    return tuple(kind(v) for v in text.split("_"))
  return type(default)(text)


def parse_synthetic_config(name: str) -> tuple[str, dict[str, Any]]:
  """(base config, overrides) of a synthetic builder config name such as
  `tiny-distractor_prob0.5-num_train64` (the inverse of `synthetic_dataset.custom_config`).

  Raises:
    ValueError: a name that `custom_config` does not give back.
  """
  base, *parts = (name or synth.DEFAULT_CONFIG).split("-")
  if base not in synth.CONFIGS:
    raise ValueError(
      f"synthetic config {name!r}: unknown base {base!r}; known: {sorted(synth.CONFIGS)}"
    )
  cfg = synth.CONFIGS[base]
  fields = sorted(features.overridable_fields(cfg), key=len, reverse=True)
  overrides = {}
  for part in parts:
    field = next((f for f in fields if part.startswith(f)), None)
    if field is None:
      raise ValueError(f"synthetic config {name!r}: cannot read {part!r}")
    overrides[field] = _parse_value(part[len(field) :], getattr(cfg, field))
  if synth.custom_config(base, **overrides).name != (name or synth.DEFAULT_CONFIG):
    raise ValueError(f"synthetic config {name!r}: cannot rebuild it from its name")
  return base, overrides


def small_training_set(config: ml_collections.ConfigDict, num_train: int) -> tuple[str, int]:
  """The builder config whose training split is the first `num_train` images of the
  base config's (built into `config.data_dir` if missing), and its size.

  The synthetic renders depend on (seed, split, index) only: the images, labels
  and test split are those of the base config.
  """
  if config.tfds_name != "synthetic":
    raise ValueError(
      f"the regularization study cuts synthetic training sets; got dataset {config.tfds_name!r}"
    )
  base, overrides = parse_synthetic_config(config.tfds_config)
  have = int(overrides.get("num_train", synth.CONFIGS[base].num_train))
  if num_train <= 0 or num_train >= have:
    return config.tfds_config, have
  overrides["num_train"] = int(num_train)
  name = synth.custom_config(base, **overrides).name
  data_dir = datasets.default_data_dir(config.data_dir)
  if datasets.find_prepared("synthetic", name, data_dir) is None and jax.process_index() == 0:
    print(f"building synthetic/{name} in {data_dir}", flush=True)
    synth.prepare(base, data_dir, **overrides)
  return name, int(num_train)


# --- runs ------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
  base: ml_collections.ConfigDict  # with the small training set and eval_every
  study_overrides: dict[str, Any]
  workdir: str
  num_train: int
  checkpoints_per_run: int

  def run(self, group: str, seed_index: int) -> runs_lib.Run:
    if group not in VARIANTS:
      raise ValueError(f"unknown regularization group {group!r}; known: {GROUPS}")
    run = runs_lib.make_run(
      self.base,
      os.path.join(self.workdir, STUDY),
      VARIANTS[group][0],
      seed_index,
      checkpoints_per_run=self.checkpoints_per_run,
    )
    # The subprocesses rebuild the base config from the command line: the study's
    # own overrides travel with each run's.
    return dataclasses.replace(run, overrides={**self.study_overrides, **run.overrides})

  def digest(self, run: runs_lib.Run) -> str:
    return records_lib.config_digest(run.config, study=STUDY)


def plan_study(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  num_train: int,
  evals_per_run: int,
  checkpoints_per_run: int,
) -> Plan:
  if evals_per_run < MIN_EVALS:
    raise ValueError(
      f"evals_per_run must be >= {MIN_EVALS} (the validation curves), got {evals_per_run}"
    )
  name, n = small_training_set(config, num_train)
  total = runs_lib.total_steps(config)
  o = {"tfds_config": name, "eval_every": max(1, total // evals_per_run)}
  return Plan(
    runs_lib.apply_overrides(config, o), o, os.path.abspath(workdir), n, checkpoints_per_run
  )


# --- one run's record ----------------------------------------------------------------


def _pck_names(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, str]:
  """The metrics.jsonl names of the cascade's PCK at the largest threshold: 'all'
  (the Total column, else the mean column) and 'wrist'."""
  metric = evaluator_lib.metric_name(config.eval.normalizer).split()[0]
  t = max(float(x) for x in config.eval.thresholds)
  names = set()
  for row in metric_writer.read_rows(run_dir):
    names.update(k for k in row if k.startswith(f"eval/cascade/{metric}@"))
  prefix = next(
    (n.rsplit("/", 1)[0] for n in names if float(n.split("@")[1].split("/")[0]) == t), None
  )
  if prefix is None:
    prefix = f"eval/cascade/{metric}@{t}"
  cols = {n.rsplit("/", 1)[1] for n in names if n.startswith(prefix + "/")}
  total = "Total" if "Total" in cols or not cols else sorted(cols)[-1]
  return {"all": f"{prefix}/{total}", "wrist": f"{prefix}/Wrist"}


def measure_run(run: runs_lib.Run, cache: preds_lib.PredictionCache) -> dict:
  """Validation curves (metrics.jsonl), the final checkpoint on the eval and the
  training split, and the over-fitting numbers of one run (JSON-ready)."""
  cfg = run.config
  skel = from_config.skeleton(cfg)
  alpha = max(float(x) for x in cfg.eval.thresholds)
  names = _pck_names(cfg, run.directory)
  curves = records_lib.read_curves(
    run.directory, ["train/e1", "eval/val_e1", names["all"], names["wrist"]]
  )
  curves = {
    "train/e1": curves["train/e1"],
    "val_e1": curves["eval/val_e1"],
    "pck_all": curves[names["all"]],
    "pck_wrist": curves[names["wrist"]],
  }
  on_train = dataclasses.replace(
    run,
    config=runs_lib.apply_overrides(cfg, {"eval_split": cfg.train_split, "max_eval_examples": 0}),
  )
  final = {}
  for split, r in (("val", run), ("train", on_train)):
    p = cache.predictions(r)
    pck = preds_lib.pck_columns(p, "cascade", skel, cfg.eval.normalizer, [alpha])
    final[f"{split}_e1"] = float(p["e1_sum"].sum() / max(p["e1_count"].sum(), 1.0))
    final[f"{split}_pck_all"] = float(pck["All"][0])
    final[f"{split}_pck_wrist"] = float(pck["Wrist"][0]) if "Wrist" in pck else None
  vs, vv = (np.asarray(x, float) for x in curves["val_e1"])
  ps, pv = (np.asarray(x, float) for x in curves["pck_all"])
  best = {}
  if vv.size and np.isfinite(vv).any():
    i = int(np.nanargmin(vv))
    best.update(val_e1_min=float(vv[i]), val_e1_min_step=int(vs[i]))
  if pv.size and np.isfinite(pv).any():
    i = int(np.nanargmax(pv))
    best.update(pck_all_max=float(pv[i]), pck_all_max_step=int(ps[i]))
  overfit = {
    # How far validation E1 climbed back from its best (0: still at its minimum).
    "val_e1_rise": final["val_e1"] - best["val_e1_min"] if "val_e1_min" in best else None,
    "val_e1_rise_rel": final["val_e1"] / best["val_e1_min"] - 1.0
    if best.get("val_e1_min")
    else None,
    "pck_drop_from_best": best["pck_all_max"] - final["val_pck_all"]
    if "pck_all_max" in best
    else None,
    # Train vs validation, both un-augmented with dropout off.
    "e1_val_over_train": final["val_e1"] / final["train_e1"] if final["train_e1"] else None,
    "pck_train_minus_val": final["train_pck_all"] - final["val_pck_all"],
  }
  return {
    "pck_metric": f"{evaluator_lib.metric_name(cfg.eval.normalizer)}@{alpha:g}",
    "metric_names": names,
    "curves": curves,
    "final": final,
    "best": best,
    "overfit": overfit,
    "throughput_img_s": records_lib.throughput(run.directory),
  }


# --- the study -------------------------------------------------------------------------


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str,
  out_dir: str = "",
  *,
  groups: Sequence[str] = GROUPS,
  seeds: Sequence[int] = (0, 1, 2),
  num_train: int = DEFAULT_NUM_TRAIN,
  evals_per_run: int = EVALS_PER_RUN,
  train: bool = True,
  max_parallel: int = 0,
  train_args: Sequence[str] = (),
  checkpoints_per_run: int = 2,
  figures_dir: str = "",
  command: str = "",
  mesh: Mesh | None = None,
) -> dict:
  """Trains (or reuses) the selected runs on the small training set, records them,
  and writes the outputs from every matching record in `out_dir`.

  Args:
    config: the base config (the command line's, overrides applied).
    workdir: runs go to `workdir/regularization/runs/`.
    out_dir: `regularization.json`, `.md`, `regularization_records/` (default: workdir).
    groups, seeds: the runs of this invocation (`GROUPS`; seed indices).
    num_train: the training images kept (0: the whole split).
    evals_per_run: evaluations per run (>= 10).
    train: False trains nothing (records of finished runs only).
    max_parallel, train_args: see `runs.train_runs`.
    checkpoints_per_run: about this many checkpoints per run.
    figures_dir: default out_dir.
    command: quoted in the outputs.
    mesh: the data mesh (default: every device).

  Returns:
    The content of `regularization.json`.
  """
  groups, seeds = records_lib.check_selection(groups, seeds, GROUPS)
  out_dir, figures_dir, mesh = records_lib.study_dirs(workdir, out_dir, figures_dir, mesh)
  plan = plan_study(
    config,
    workdir,
    num_train=num_train,
    evals_per_run=evals_per_run,
    checkpoints_per_run=checkpoints_per_run,
  )
  store = records_lib.RecordStore(os.path.join(out_dir, f"{STUDY}_records"))
  runs = {plan.run(g, s).name: (g, plan.run(g, s)) for g in groups for s in seeds}
  digests = {n: plan.digest(r) for n, (_, r) in runs.items()}
  cache = preds_lib.PredictionCache(mesh)

  def measure(run):
    return {"group": runs[run.name][0], "num_train": plan.num_train, **measure_run(run, cache)}

  training = {"train": train, "max_parallel": max_parallel, "mesh": mesh, "train_args": train_args}
  records_lib.record_runs([r for _, r in runs.values()], store, digests, measure, **training)
  return write_report(plan, store, out_dir, figures_dir, command, mesh)


def matching_records(plan: Plan, store: records_lib.RecordStore) -> tuple[list[dict], list[str]]:
  used, ignored = [], []
  for name in store.names():
    rec = store.load(name)
    try:
      ok = rec["config_digest"] == plan.digest(plan.run(rec["group"], int(rec["seed_index"])))
    except (KeyError, TypeError, ValueError):
      ok = False
    if ok:
      used.append(rec)
    else:
      ignored.append(name)
  return used, ignored


# --- merging records -------------------------------------------------------------------

_STATS = {
  "final": ("val_e1", "train_e1", "val_pck_all", "train_pck_all", "val_pck_wrist"),
  "best": ("val_e1_min", "pck_all_max"),
  "overfit": (
    "val_e1_rise",
    "val_e1_rise_rel",
    "pck_drop_from_best",
    "e1_val_over_train",
    "pck_train_minus_val",
  ),
}


def aggregate(records: list[dict]) -> dict:
  """group -> {section: {stat: mean_std}} over seeds."""
  by: dict[str, list[dict]] = {}
  for r in records:
    by.setdefault(r["group"], []).append(r)
  return {
    g: {
      sec: {k: records_lib.mean_std(r[sec].get(k) for r in by[g]) for k in keys}
      for sec, keys in _STATS.items()
    }
    | {"seeds": [int(r["seed"]) for r in by[g]], "runs": [r["run"] for r in by[g]]}
    for g in GROUPS
    if g in by
  }


def _compare(agg: dict, better: str, worse: str, section: str, stat: str, lower_is_better: bool):
  """Is `better` ahead of `worse` on `stat`, and by more than the seeds' spread?"""
  if better not in agg or worse not in agg:
    return None
  a, b = agg[better][section][stat], agg[worse][section][stat]
  if a["mean"] is None or b["mean"] is None:
    return None
  diff = (b["mean"] - a["mean"]) if lower_is_better else (a["mean"] - b["mean"])
  spread = float(np.hypot(a["std"], b["std"]))
  return {
    "better": better,
    "worse": worse,
    "stat": f"{section}.{stat}",
    "advantage": diff,  # > 0: `better` is ahead
    "spread": spread,
    "holds": diff > 0,
    "separated": diff > spread if spread > 0 else diff > 0,
  }


def comparisons(agg: dict) -> dict:
  """The paper's claims as pairwise comparisons of the final validation numbers."""
  out = {}
  for better, worse, claim in (
    ("spatial_dropout", "no_dropout", "Fig. 14b: SpatialDropout beats no dropout"),
    (
      "spatial_dropout",
      "standard_dropout",
      "§3.2: standard dropout fails where SpatialDropout helps",
    ),
    (
      "spatial_dropout",
      "standard_cascade",
      "Fig. 14a: the shared-feature cascade beats the standard cascade",
    ),
  ):
    out[f"{better}_vs_{worse}"] = {
      "claim": claim,
      "val_e1": _compare(agg, better, worse, "final", "val_e1", True),
      "val_pck_all": _compare(agg, better, worse, "final", "val_pck_all", False),
      "val_pck_wrist": _compare(agg, better, worse, "final", "val_pck_wrist", False),
    }
  return out


def verdict(agg: dict, comps: dict, num_train: int, steps: dict, metric: str) -> str:
  """The honest sentences, from the numbers: which variant over-fits and by how much,
  and whether the paper's ordering holds (beyond the seeds' spread or not)."""
  if not agg:
    return "No run measured yet."
  label = {g: VARIANTS[g][1] for g in GROUPS}
  total = steps["coarse"] + steps["fine"] + steps["joint"]
  epochs = total * steps["batch_size"] / max(num_train, 1)
  head = (
    f"With {num_train} training images and {total} steps of batch {steps['batch_size']} "
    f"(≈{epochs:.0f} epochs)"
  )
  parts = [_overfit_sentence(agg, head, label)]
  finals = ", ".join(
    f"{label[g]} {fmt(a['final']['val_pck_all'], '.1f')} "
    f"(val E1 {fmt(a['final']['val_e1'], '.3g')})"
    for g, a in agg.items()
  )
  parts.append(f"Final cascade {metric}, all joints: {finals}.")
  claims = [_claim_sentence(comp, label) for comp in comps.values()]
  claims = [c for c in claims if c is not None]
  if claims:
    parts.append("The paper's ordering — " + "; ".join(claims) + ".")
  return " ".join(parts)


def _overfit_sentence(agg: dict, head: str, label: dict[str, str]) -> str:
  """Which variant over-fits most (its final validation E1 above its minimum), or none."""
  rise = {g: a["overfit"]["val_e1_rise_rel"]["mean"] for g, a in agg.items()}
  rise = {g: v for g, v in rise.items() if v is not None}
  gap = {g: fmt(a["overfit"]["e1_val_over_train"]) for g, a in agg.items()}
  over = {g: v for g, v in rise.items() if v > OVERFIT_RISE}
  if not over:
    ratios = [a["overfit"]["e1_val_over_train"]["mean"] for a in agg.values()]
    wide = any(r is not None and r > LARGE_GAP for r in ratios)
    return (
      f"{head}, no variant's validation E1 rises: it ends within {100 * OVERFIT_RISE:.0f} % of its "
      "minimum for every one (val/train E1: "
      + ", ".join(f"{label[g]} {gap[g]}×" for g in agg)
      + (
        f"); but the training images are fitted far better than the held-out ones (a gap "
        f"above {LARGE_GAP:g}×): the regime where regularization matters."
        if wide
        else "); the runs are too short or the set too large to show the paper's regime."
      )
    )
  worst = max(over, key=over.get)
  text = (
    f"{head}, {label[worst]} over-fits most: its validation E1 ends {100 * over[worst]:.1f} % "
    f"above its minimum and at {gap[worst]}× its training-set E1"
  )
  rest = [
    f"{label[g]} {100 * v:.1f} % ({gap[g]}×)"
    for g, v in sorted(rise.items(), key=lambda x: -x[1])
    if g != worst
  ]
  if rest:
    text += "; then " + ", ".join(rest)
  return text + "."


def _claim_sentence(comp: dict, label: dict[str, str]) -> str | None:
  """Whether one of `comparisons`' claims holds on the final PCK (None when unmeasured)."""
  c, e = comp["val_pck_all"], comp["val_e1"]
  if c is None:
    return None
  if c["holds"] and c["separated"]:
    how = "holds"
  elif c["holds"]:
    how = "holds only within the seeds' spread"
  else:
    how = "does not hold"
  lead, by = (c["better"], c["advantage"]) if c["advantage"] >= 0 else (c["worse"], -c["advantage"])
  text = (
    f"{comp['claim']}: {how} ({label[lead]} ahead by {by:.1f} points, seed spread {c['spread']:.1f}"
  )
  if e is not None:
    lower = e["better"] if e["advantage"] >= 0 else e["worse"]
    text += f"; lower val E1: {label[lower]}, by {abs(e['advantage']):.3g}"
  return text + ")"


def write_report(
  plan: Plan,
  store: records_lib.RecordStore,
  out_dir: str,
  figures_dir: str,
  command: str,
  mesh: Mesh,
) -> dict:
  records, ignored = matching_records(plan, store)
  records.sort(key=lambda r: (GROUPS.index(r["group"]), int(r["seed_index"])))
  agg = aggregate(records)
  comps = comparisons(agg)
  steps = records[0]["steps"] if records else records_lib.steps_of(plan.base)
  metric = records[0]["pck_metric"] if records else "PCK"
  figures = {}
  if records and jax.process_index() == 0:
    figures = {"curves": write_figure(records, figures_dir, metric)}
  result = {
    "study": STUDY,
    "seeds": sorted({int(r["seed"]) for r in records}),
    "dataset": f"{plan.base.tfds_name}/{plan.base.tfds_config}, "
    f"eval split {plan.base.eval_split!r}",
    "num_train": plan.num_train,
    "steps": steps,
    "geometry": {
      "input_hw": list(plan.base.input_hw),
      "context": int(plan.base.model.context),
      "pool": runs_lib.MAIN_POOL,
      "torso_px": float(np.median(precision.torso_px(plan.base))),
      "width": float(plan.base.model.width),
    },
    "pck_metric": metric,
    "variants": {g: {"run": VARIANTS[g][0], "label": VARIANTS[g][1]} for g in GROUPS},
    "results": agg,
    "comparisons": comps,
    "verdict": verdict(agg, comps, plan.num_train, steps, metric),
    "missing_groups": [g for g in GROUPS if g not in agg],
    "ignored_records": ignored,
    **records_lib.provenance(records, mesh, command, figures, out_dir),
  }
  return records_lib.publish(result, out_dir, STUDY, markdown)


def write_figure(records: list[dict], figures_dir: str, metric: str) -> str:
  """Validation E1, cascade PCK (all joints, wrist) and train E1 over steps, mean ± std."""
  plt = tables.plt()
  panels = (
    ("val_e1", "validation E1 (eval split, dropout off)"),
    ("pck_all", f"cascade {metric}, all joints (eval split)"),
    ("pck_wrist", f"cascade {metric}, wrist (eval split)"),
    ("train/e1", "train E1 (augmented batches, as logged)"),
  )
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
  for i, g in enumerate(GROUPS):
    recs = [r for r in records if r["group"] == g]
    if not recs:
      continue
    for ax, (key, title) in zip(axes, panels, strict=True):
      curves = [
        (np.asarray(r["curves"][key][0]), np.asarray(r["curves"][key][1], float)) for r in recs
      ]
      steps = curves[0][0]
      if steps.size and all(np.array_equal(s, steps) for s, _ in curves):
        style = "-" if key.startswith("train") else "o-"
        tables.plot_mean(ax, steps, [v for _, v in curves], style, VARIANTS[g][1], f"C{i}")
      else:  # seeds logged at different steps (a resumed run): each its own line
        for j, (s, v) in enumerate(curves):
          label = VARIANTS[g][1] if j == 0 else None
          ax.plot(s, v, "-", color=f"C{i}", alpha=0.6, label=label)
      ax.set_title(title, fontsize=8)
      ax.set_xlabel("step", fontsize=8)
      ax.grid(alpha=0.3)
  st = records[0]["steps"]
  ends = np.cumsum([st["coarse"], st["fine"]])
  for ax, (key, _) in zip(axes, panels, strict=True):
    ax.legend(fontsize=6)
    tables.curve_axes(ax, ends, log="e1" in key)
  fig.suptitle(
    f"{records[0]['num_train']} training images: over-fitting by variant (mean ± std over seeds)",
    fontsize=10,
  )
  fig.tight_layout()
  return records_lib.save_figure(fig, figures_dir, f"{STUDY}_curves")


def markdown(res: dict) -> str:
  st = res["steps"]
  lines = [
    "# Regularization study: SpatialDropout and the shared-feature cascade on a small "
    "training set (paper §3.2, Fig. 14)",
    "",
    f"- dataset: {res['dataset']} ({res['num_train']} training images)",
    f"- input {res['geometry']['input_hw'][1]}×{res['geometry']['input_hw'][0]}, model width "
    f"{res['geometry']['width']:g}, {res['geometry']['pool']}x pooling, torso "
    f"{res['geometry']['torso_px']:.1f} px (median of the eval split)",
    f"- steps coarse/fine/joint: {st['coarse']}/{st['fine']}/{st['joint']}, batch "
    f"{st['batch_size']}, {st['dtype']}, evaluated every {st['eval_every']} steps",
    f"- seeds: {res['seeds']} (mean ± std over seeds)",
  ]
  lines += records_lib.provenance_lines(res)
  lines += ["## Verdict", "", res["verdict"], ""]
  lines += [
    f"## Final numbers ({res['pck_metric']})",
    "",
    "| variant | val E1 | train E1 | val E1 / train E1 | val E1 rise from its min | "
    "val PCK all | train PCK all | val PCK wrist |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for g, a in res["results"].items():
    f, o = a["final"], a["overfit"]
    lines.append(
      f"| {res['variants'][g]['label']} | {fmt(f['val_e1'], '.3g')} | {fmt(f['train_e1'], '.3g')} "
      f"| {fmt(o['e1_val_over_train'])} | {fmt(o['val_e1_rise_rel'], '.3f')} "
      f"| {fmt(f['val_pck_all'], '.1f')} | {fmt(f['train_pck_all'], '.1f')} "
      f"| {fmt(f['val_pck_wrist'], '.1f')} |"
    )
  lines += [
    "",
    "val = the eval split, train = the training images; both un-augmented with dropout off, "
    "the final checkpoint. 'rise from its min': final val E1 / its lowest value over the "
    "evaluations − 1.",
    "",
    *records_lib.figure_lines(res),
  ]
  return "\n".join(lines) + "\n"
