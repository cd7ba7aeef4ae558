"""Evaluation: predictions over a split, PCK/PCKh tables, curves and σ; the
`Evaluator` that training and offline evaluation share.

An `Evaluator` (big_vision's pattern) is built once from the config
(`build_evaluator`); `run(params)` predicts the split with the one prediction path
(`inference.make_predict_fn`), scores it, and yields `(name, value)` scalars
(`cascade/PCKh@0.5/Total`, `coarse/sigma_x/head_top`, `val_e1`, ...); the full
result (tables, curves) and the predictions stay on the evaluator for files.
Training logs the scalars every `eval_every` steps; `evaluate_checkpoint`
(`python -m experiments.evaluate`) writes the files of one checkpoint.

Scores are computed in the canvas frame (input pixels), where the normalizer was
scaled with the image (PCK is invariant to that similarity); the predictions
file, in the original image frame, gives the official numbers
(`experiments.evaluate_predictions`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import (
  checkpoints,
  dataset_specs,
  fileio,
  from_config,
  inference,
  input_pipeline,
  metrics,
  prediction_io,
  spatial_training,
  visualize,
)
from heatpose_jax import joints as joints_lib

# The estimates `score` scores when present: the coarse argmax, the cascade, and
# the same with the MRF spatial model's person selection.
MODEL_KEYS = ("coarse", "cascade", "coarse_mrf", "cascade_mrf")


def metric_name(normalizer: str, protocol: str = "") -> str:
  """'PCKh' (head-normalized) or 'PCK' (torso-normalized), with the FLIC protocol."""
  name = "PCKh" if normalizer == "head_size" else "PCK"
  return f"{name} ({protocol} protocol)" if protocol else name


def predict_dataset(
  predict_fn: Callable,
  params,
  batches: Iterable[dict],
  mesh: Mesh,
  *,
  selector_params=None,
  total: int | None = None,
  desc: str = "",
) -> dict:
  """Runs a `make_predict_fn` function over an evaluation stream (padded, with `_mask`).

  Returns:
    dict of numpy arrays over the real examples (`_mask` True) of all hosts:
    `coarse`, `cascade` `(N, J, 2)` canvas frame, `scores` `(N, J)`, and the
    batch's fields (`joints`, `joints_valid`, `head_size`, `torso_size`,
    `torso_box`, `canvas_to_image`, `index`, ...).
  """
  from tqdm.auto import tqdm

  parts: dict[str, list] = {}
  bar = tqdm(total=total, desc=desc or "predicting", unit="img", disable=None, leave=False)
  for batch in batches:
    args = (params, input_pipeline.to_global_array(batch, mesh))
    if selector_params is not None:
      args += (selector_params,)
    out = jax.device_get(predict_fn(*args))
    mask = np.asarray(out.pop("_mask"), bool)
    for k, v in out.items():
      parts.setdefault(k, []).append(np.asarray(v)[mask])
    bar.update(int(mask.sum()))
  bar.close()
  if not parts:
    raise ValueError(f"{desc or 'predicting'}: the evaluation stream gave no batch (no example)")
  return {k: np.concatenate(v) for k, v in parts.items()}


def score(
  preds: dict[str, np.ndarray],
  skeleton: joints_lib.Skeleton,
  *,
  normalizer: str,
  thresholds: Sequence[float],
  curve_max: float,
  pools: metrics.Pools | None = None,
) -> dict:
  """PCK tables, per-joint curves and x-error σ of every estimate in `preds`.

  Args:
    preds: `predict_dataset` output.
    skeleton: the dataset's joints.
    normalizer: 'head_size' (PCKh) or 'torso_size' (PCK).
    thresholds: α values of the tables.
    curve_max: the curves run over α in [0, curve_max].
    pools: the table's pooled columns (`DatasetSpec.pools`); None: those of the
      dataset registered as `skeleton.name` (`dataset_specs.get`).

  Returns:
    JSON-ready dict: {model: {"table": {α: {column: %}}, "curve": {"alpha": [...],
    column: [...]}, "per_joint_curve": {joint: [...]}, "sigma_x": {joint: σ},
    "sigma_x_removed": n}} for each of `MODEL_KEYS` in `preds`, plus
    "num_examples", "metric" and "normalizer" (and "val_e1" when the
    predictions carry the coarse loss).
  """
  if normalizer not in ("head_size", "torso_size"):
    raise ValueError(f"eval normalizer must be 'head_size' or 'torso_size', got {normalizer!r}")
  gt, valid, norm = preds["joints"], preds["joints_valid"] > 0, preds[normalizer]
  pooled = dataset_specs.get(skeleton.name).pools if pools is None else tuple(pools)
  alphas = np.linspace(0.0, curve_max, 21)
  result = {
    "num_examples": int(gt.shape[0]),
    "normalizer": normalizer,
    "metric": metric_name(normalizer),
  }
  if "e1_sum" in preds:
    result["val_e1"] = float(preds["e1_sum"].sum() / max(preds["e1_count"].sum(), 1.0))
  for name in (m for m in MODEL_KEYS if m in preds):
    p = preds[name]
    tables = metrics.pck_tables(p, gt, valid, norm, skeleton, thresholds, pooled)
    rates, counts = metrics.pck_curve(p, gt, valid, norm, alphas)
    curve = metrics.table(rates, counts, skeleton, pooled)
    sig, removed = {}, 0
    for j, jn in enumerate(skeleton.model_joints):
      s, r = metrics.x_error_sigma(p[:, [j]], gt[:, [j]], valid[:, [j]])
      sig[jn] = s
      removed += r
    result[name] = {
      "table": {str(t): v for t, v in tables.items()},
      "curve": {"alpha": alphas.tolist(), **{k: np.asarray(v).tolist() for k, v in curve.items()}},
      "per_joint_curve": {jn: rates[:, j].tolist() for j, jn in enumerate(skeleton.model_joints)},
      "sigma_x": sig,
      "sigma_x_removed": removed,
    }
  return result


def scalars(result: dict) -> Iterator[tuple[str, float]]:
  """`(name, value)` pairs of a `score` result: every table cell and σ, and val_e1."""
  metric = result["metric"].split()[0]
  if "val_e1" in result:
    yield "val_e1", result["val_e1"]
  for m in (m for m in MODEL_KEYS if m in result):
    for t, cols in result[m]["table"].items():
      for col, v in cols.items():
        yield f"{m}/{metric}@{t}/{col}", v
    for joint, s in result[m]["sigma_x"].items():
      yield f"{m}/sigma_x/{joint}", s


def format_table(result: dict, title: str = "") -> str:
  """The one table a command prints: each estimate's columns at the largest
  threshold, and the Total (or mean) at every other threshold."""
  models = [m for m in MODEL_KEYS if m in result]
  ts = list(result[models[0]]["table"])
  main = ts[-1]
  metric = result["metric"]
  rows = {}
  for m in models:
    cols = dict(result[m]["table"][main])
    for t in ts[:-1]:
      c = result[m]["table"][t]
      cols[f"Total@{t}" if "Total" in c else f"mean@{t}"] = (
        c["Total"] if "Total" in c else float(np.nanmean(list(c.values())))
      )
    rows[m] = cols
  head = f"{title}: " if title else ""
  lines = [f"{head}{metric}@{main} (%), {result['num_examples']} examples"]
  lines.append(metrics.format_table(rows))
  return "\n".join(lines)


def format_details(result: dict) -> str:
  """Every table and the σ of the x error, for table.txt."""
  models = [m for m in MODEL_KEYS if m in result]
  lines = [f"examples: {result['num_examples']}"]
  for t in result[models[0]]["table"]:
    lines.append(f"\n{result['metric']} @ {t}")
    lines.append(metrics.format_table({m: result[m]["table"][t] for m in models}))
  lines.append("\nsigma of the x error (input px, |e| <= 20):")
  lines.append(metrics.format_table({m: result[m]["sigma_x"] for m in models}))
  return "\n".join(lines)


def plot_curves(result: dict, path: str, title: str) -> None:
  """PNG of every estimate's curve of every table column."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cols = [c for c in result["coarse"]["curve"] if c != "alpha"]
  fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 2.8), squeeze=False)
  styles = (("coarse", "--"), ("cascade", "-"), ("coarse_mrf", ":"), ("cascade_mrf", "-."))
  for ax, col in zip(axes[0], cols, strict=True):
    for m, style in ((m, s) for m, s in styles if m in result):
      ax.plot(result[m]["curve"]["alpha"], result[m]["curve"][col], style, label=m)
    ax.set_title(col)
    ax.set_xlabel(f"normalized distance ({result['metric'].split()[0]})")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("detection rate, %")
  axes[0][0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=90)


class Evaluator:
  """PCK/PCKh of a model on one split (big_vision's evaluator pattern).

  Args:
    predict_fn: `inference.make_predict_fn(...)`.
    batches: returns a fresh evaluation stream (`from_config.eval_batches`).
    mesh: the data mesh.
    skeleton, normalizer, thresholds, curve_max, pools: see `score`.
    num_examples: for the progress bar.
    selector_params: the selector's parameters (the MRF's), if `predict_fn` has one.
    protocol: named beside the metric (FLIC's).
  """

  def __init__(
    self,
    predict_fn: Callable,
    batches: Callable[[], Iterable[dict]],
    mesh: Mesh,
    skeleton: joints_lib.Skeleton,
    *,
    normalizer: str,
    thresholds: Sequence[float],
    curve_max: float,
    num_examples: int | None = None,
    selector_params=None,
    protocol: str = "",
    pools: metrics.Pools | None = None,
  ):
    self.predict_fn, self.batches, self.mesh = predict_fn, batches, mesh
    self.skeleton, self.pools = skeleton, pools
    self.normalizer, self.thresholds, self.curve_max = normalizer, tuple(thresholds), curve_max
    self.num_examples, self.selector_params, self.protocol = num_examples, selector_params, protocol
    self.preds: dict | None = None
    self.result: dict | None = None

  def predictions(self, params) -> dict:
    return predict_dataset(
      self.predict_fn,
      params,
      self.batches(),
      self.mesh,
      selector_params=self.selector_params,
      total=self.num_examples,
      desc="evaluating",
    )

  def run(self, params) -> Iterator[tuple[str, float]]:
    """Predicts and scores the split; yields `(name, value)` (`scalars`)."""
    self.preds = self.predictions(params)
    self.result = score(
      self.preds,
      self.skeleton,
      normalizer=self.normalizer,
      thresholds=self.thresholds,
      curve_max=self.curve_max,
      pools=self.pools,
    )
    self.result["metric"] = metric_name(self.normalizer, self.protocol)
    yield from scalars(self.result)


def build_evaluator(
  config: ml_collections.ConfigDict,
  model,
  mesh: Mesh,
  workdir: str,
  *,
  mrf: spatial_training.FittedMRF | None = None,
  split: str = "",
  keep_heatmaps: bool = False,
) -> Evaluator:
  """The evaluator of `config.eval_split` (or `split`): coarse and cascade, their
  MRF variants with a fitted `mrf`, and the validation E1."""
  source = from_config.eval_source(config, workdir, split)
  predict_fn = inference.make_predict_fn(
    model,
    mesh,
    coarse_refine=config.eval.coarse_refine,
    selector=None if mrf is None else spatial_training.mrf_selector(mrf.spec),
    keep_heatmaps=keep_heatmaps,
    loss_codec=from_config.coarse_codec(config, model),
  )
  selector_params = None
  if mrf is not None:
    selector_params = jax.device_put(mrf.params, NamedSharding(mesh, PartitionSpec()))
  evaluator = Evaluator(
    predict_fn,
    lambda: from_config.eval_batches(config, source),
    mesh,
    from_config.skeleton(config),
    normalizer=config.eval.normalizer,
    thresholds=tuple(config.eval.thresholds),
    curve_max=config.eval.curve_max,
    num_examples=len(source),
    selector_params=selector_params,
    protocol=from_config.protocol(config),
    pools=from_config.dataset_spec(config).pools,
  )
  evaluator.source = source
  return evaluator


def write_predictions_file(
  spec: dataset_specs.DatasetSpec, preds_image: np.ndarray, path: str
) -> str:
  """Image-frame predictions `(N, J, 2)` in the dataset's community format
  (`spec.prediction_format`).

  'mpii': (N, 16, 2) 1-based (MPII's tools, `evaluate_predictions`). 'flic':
  (N, 11, 2) in examples.mat's frame, the 4 joints the model does not predict
  (hips, eyes) NaN. None: (N, J, 2) 1-based. Rows follow the split's order.
  """
  skeleton = spec.skeleton
  if spec.prediction_format == "mpii":
    prediction_io.write_mpii_predictions(path, preds_image)
  elif spec.prediction_format == "flic":
    full = np.full((preds_image.shape[0], len(skeleton.annotated), 2), np.nan)
    full[:, skeleton.model_indices] = preds_image
    prediction_io.write_flic_predictions(path, full)
  else:
    prediction_io.write_predictions(path, preds_image + 1.0, skeleton.num_joints)
  return path


def evaluate_checkpoint(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  split: str = "",
  step: int | None = None,
  num_overlays: int = 8,
  spatial_model: bool = True,
  mesh: Mesh | None = None,
) -> dict:
  """Scores a checkpoint of `workdir` (default the newest) on `split`.

  Writes into `workdir/eval_<split>/`: results.json, table.txt, pck_curves.png,
  predictions.mat (original image frame, `write_predictions_file`) and
  overlay_<index>.png (prediction in red, ground truth in green). With
  `spatial_model` and an MRF saved in `workdir`, the MRF variants `coarse_mrf`
  / `cascade_mrf` are scored too and the cascade+MRF estimates go to
  predictions_mrf.mat. Only the parameters are restored (no optimizer state,
  nothing compiled to build them).
  """
  from_config.check(config)
  split = split or config.eval_split
  mesh = input_pipeline.make_mesh() if mesh is None else mesh
  skeleton = from_config.skeleton(config)
  model = from_config.model(config)
  params, step = checkpoints.restore_params(
    workdir, from_config.abstract_params(config, mesh), step
  )
  mrf = spatial_training.load(workdir) if spatial_model else None
  if mrf is not None and mrf.info.get("cascade_step") != step:
    logging.warning(
      "the spatial model in %s was fitted on step %s, the checkpoint is step %d: refit it",
      workdir,
      mrf.info.get("cascade_step"),
      step,
    )
  evaluator = build_evaluator(config, model, mesh, workdir, mrf=mrf, split=split)
  dict(evaluator.run(params))
  result, preds = evaluator.result, evaluator.preds
  result["step"] = step
  title = f"{config.dataset} {split}, step {step}"
  if jax.process_index() == 0:
    out = os.path.join(workdir, f"eval_{split}")
    fileio.write_json(os.path.join(out, "results.json"), result)
    fileio.write_text(
      os.path.join(out, "table.txt"),
      f"{title}\n{format_table(result)}\n\n{format_details(result)}\n",
    )
    plot_curves(result, os.path.join(out, "pck_curves.png"), title)
    order = np.argsort(preds["index"], kind="stable")
    for key, name in (("cascade", "predictions.mat"), ("cascade_mrf", "predictions_mrf.mat")):
      if key in preds:
        xy = inference.canvas_to_image_points(preds[key], preds["canvas_to_image"])[order]
        result[f"predictions_file{key[7:]}"] = write_predictions_file(
          from_config.dataset_spec(config), xy, os.path.join(out, name)
        )
    source = evaluator.source
    crop = from_config.crop(config)
    for k in range(min(num_overlays, len(preds["index"]))):
      ex = source[k]
      if isinstance(ex["image"], bytes):  # dataset features, not a cached canvas
        ex = crop(ex)
      over = visualize.draw(
        ex["image"],
        preds["cascade"][k],
        skeleton,
        gt=ex["joints"],
        gt_valid=ex["joints_valid"],
        title=f"{config.dataset} {split} #{int(preds['index'][k])}",
      )
      fileio.save_image(os.path.join(out, f"overlay_{int(preds['index'][k]):05d}.png"), over)
  print(format_table(result, title), flush=True)
  return result
