"""Person selection with the MRF spatial model (paper §3.3), on synthetic scenes
with a distractor: `run_study(config, workdir)`.

Images of the synthetic people may hold a second, complete person (the
`distractor_prob` of the dataset config); the annotated one is marked by its
torso box (the MRF's observed node). The study trains the cascade (or resumes /
reuses `workdir`), fits the MRF (`train.fit_spatial_model`), and reports for
coarse, cascade, coarse+MRF and cascade+MRF:

  * the right-person rate: the share of valid joints of images with a distractor
    that lie closer to the annotated person than to the distractor
    (`spatial_model.right_person_rate`);
  * the on-distractor rate: the share of the same joints placed within α ·
    normalizer of the distractor's same joint (α: the largest threshold);
  * PCK / PCKh (`evaluator.score`, the config's normalizer and thresholds).

Two views of the same test images:
  * 'person': the config's person-centred crop (what training and evaluation
    use; the distractor is at the canvas border, often half outside);
  * 'image': the whole image letterboxed into the canvas (both people complete,
    the target anywhere). The cascade is the same (trained on 'person' canvases;
    the synthetic people have about the same size in both views); its MRF is
    fitted on 'image' views of the training images.

Predictions come from `inference.make_predict_fn` with the MRF as its selector
(one compiled function for both views' MRFs). Outputs in `out_dir` (default
`workdir/mrf_study`): table.md, table.json, figure.png (bar charts) and
overlays.png (scenes without vs with the MRF).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import ImageDraw

from heatpose_jax import from_config, train
from heatpose_jax.core import fileio, sharding
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.evaluation import visualize
from heatpose_jax.model import inference
from heatpose_jax.mrf import spatial_model as sm
from heatpose_jax.mrf import spatial_training
from heatpose_jax.training import checkpoints
from studies import tables

VIEWS = ("person", "image")
VARIANTS = (
  ("coarse", "coarse"),
  ("cascade", "cascade"),
  ("coarse_mrf", "coarse+MRF"),
  ("cascade_mrf", "cascade+MRF"),
)
_DEFAULT_BOX_SCALE = {"extent": 1.0, "scale_normalized": 1.25}


class WholeImageView:
  """Dataset features whose `center` / `scale` make an 'extent' (or
  'scale_normalized') crop show the whole image, letterboxed: centre = the image
  centre, 200 · scale · box_scale = the longer image side. `limit`: only the
  first examples (0: all)."""

  def __init__(self, source, box_scale: float, limit: int = 0):
    self.source, self.box_scale = source, float(box_scale)
    self.n = min(limit, len(source)) if limit else len(source)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not 0 <= i < self.n:
      raise IndexError(i)
    ex = dict(self.source[i])
    h, w = (int(v) for v in np.asarray(ex["image_hw"]))
    ex["center"] = np.array([(w - 1) / 2, (h - 1) / 2], np.float32)
    ex["scale"] = np.float32(max(h, w) / (200.0 * self.box_scale))
    return ex


def right_person_rates(preds: dict[str, np.ndarray]) -> dict[str, Any]:
  """Right-person rate (%) of every estimate in `preds`, over the valid joints of
  the images that have a distractor; plus the counts."""
  if "distractor_joints" not in preds:
    raise ValueError("the predictions have no distractor_joints: use a synthetic dataset")
  valid = preds["joints_valid"] * preds["has_distractor"].astype(np.float32)[:, None]
  out = {
    "num_with_distractor": int(preds["has_distractor"].sum()),
    "num_joints": int(valid.sum()),
  }
  for key, _ in VARIANTS:
    if key in preds:
      rate = sm.right_person_rate(preds[key], preds["joints"], preds["distractor_joints"], valid)
      out[key] = 100.0 * float(rate)
  return out


def on_distractor_rates(
  preds: dict[str, np.ndarray], normalizer: str, alpha: float
) -> dict[str, float]:
  """Share (%) of the same joints (as `right_person_rates`) whose estimate lies
  within α · normalizer of the distractor's same joint: "PCK on the wrong person",
  the failure that person selection removes."""
  valid = (preds["joints_valid"] > 0) & preds["has_distractor"][:, None].astype(bool)
  norm = preds[normalizer][:, None]
  out = {}
  for key, _ in VARIANTS:
    if key in preds:
      d = np.linalg.norm(preds[key] - preds["distractor_joints"], axis=-1)
      hit = (d <= alpha * norm) & valid
      out[key] = 100.0 * float(hit.sum()) / max(int(valid.sum()), 1)
  return out


def _total(cols: dict[str, float]) -> float:
  return float(cols["Total"]) if "Total" in cols else float(np.mean(list(cols.values())))


def view_rows(
  preds: dict[str, np.ndarray], scored: dict, normalizer: str, alpha: float
) -> dict[str, dict]:
  """{estimate: {'right_person': %, 'on_distractor': %, 'pck': {α: Total %}}} of one view."""
  rates = right_person_rates(preds)
  wrong = on_distractor_rates(preds, normalizer, alpha)
  return {
    key: {
      "right_person": rates.get(key, float("nan")),
      "on_distractor": wrong.get(key, float("nan")),
      "pck": {t: _total(cols) for t, cols in scored[key]["table"].items()},
    }
    for key, _ in VARIANTS
    if key in scored
  }


def format_markdown(summary: dict) -> str:
  """table.md of `run_study`'s summary."""
  metric = "PCKh" if summary["normalizer"] == "head_size" else "PCK"
  a = summary["distractor_alpha"]
  lines = [
    "# MRF person selection (paper §3.3) on synthetic scenes with a distractor",
    "",
    f"Dataset `{summary['dataset']}`, split `{summary['split']}`; cascade step "
    f"{summary['step']}; MRF {summary['mrf_steps']} Adam steps, lr {summary['mrf_learning_rate']}.",
    "Right person: share of valid joints (of images with a distractor) closer to the "
    f"annotated person than to the distractor. On distractor: share of the same joints within "
    f"{a} × normalizer of the distractor's same joint ({metric}@{a} on the wrong person). "
    f"{metric}: all valid joints, the table's Total.",
  ]
  for view, v in summary["views"].items():
    ts = list(next(iter(v["rows"].values()))["pck"])
    lines += [
      "",
      f"## view: {view} — {v['description']}",
      "",
      f"{v['num_examples']} images, {v['num_with_distractor']} with a distractor, "
      f"{v['num_joints']} joints counted; MRF fit loss {v['mrf_loss']}.",
      "",
      "| estimate | right person % | on distractor % | "
      + " | ".join(f"{metric}@{t} %" for t in ts)
      + " |",
      "|---|---:|---:|" + "---:|" * len(ts),
    ]
    for key, label in VARIANTS:
      if key in v["rows"]:
        r = v["rows"][key]
        cells = [f"{r['right_person']:.1f}", f"{r['on_distractor']:.1f}"]
        cells += [f"{r['pck'][t]:.1f}" for t in ts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_bars(summary: dict, path: str) -> None:
  """figure.png: right-person rate, on-distractor rate and PCK at the largest
  threshold, per view and estimate."""
  views = list(summary["views"])
  metric = "PCKh" if summary["normalizer"] == "head_size" else "PCK"
  fig, axes = tables.plt().subplots(1, 3, figsize=(13, 3.2))
  width = 0.8 / len(VARIANTS)
  titles = {
    "right_person": "joints on the right person",
    "on_distractor": f"{metric}@{summary['distractor_alpha']} on the distractor",
  }
  for ax, what in zip(axes, ("right_person", "on_distractor", "pck"), strict=True):
    t = None
    for i, (key, label) in enumerate(VARIANTS):
      vals = []
      for view in views:
        r = summary["views"][view]["rows"].get(key)
        if r is None:
          vals.append(np.nan)
          continue
        t = list(r["pck"])[-1]
        vals.append(r["pck"][t] if what == "pck" else r[what])
      ax.bar(np.arange(len(views)) + (i - 1.5) * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(views)), [f"view: {v}" for v in views])
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel("%")
    ax.set_title(titles.get(what, f"{metric}@{t} Total"))
  axes[0].legend(fontsize=7, loc="lower left")
  fig.suptitle(f"{summary['dataset']} {summary['split']}, step {summary['step']}", fontsize=9)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=100)


def scene_tile(
  canvas: np.ndarray,
  xy: np.ndarray,
  skeleton: joints_lib.Skeleton,
  torso_box: np.ndarray,
  gt: np.ndarray | None,
  title: str,
  min_side: int = 256,
) -> np.ndarray:
  """An enlarged canvas `(H', W', 3)` uint8 with the estimate `xy` (red), the
  ground truth (green, when given) and the torso box (yellow), all in canvas px."""
  im, k = visualize.enlarge(canvas, min_side)
  x1, y1, x2, y2 = (np.asarray(torso_box, np.float64) * k + (k - 1) / 2).ravel()
  ImageDraw.Draw(im).rectangle([x1, y1, x2, y2], outline=(255, 220, 0), width=max(1, k // 2))

  def up(p):
    return None if p is None else np.asarray(p, np.float64) * k + (k - 1) / 2

  return visualize.draw(np.asarray(im), up(xy), skeleton, gt=up(gt), min_side=1, title=title)


def _pick_scenes(preds: dict[str, np.ndarray], n: int) -> list[int]:
  """Rows where the MRF moved the most joints to the right person, then the rest."""
  valid = preds["joints_valid"] > 0

  def right(key):
    d_t = np.linalg.norm(preds[key] - preds["joints"], axis=-1)
    d_d = np.linalg.norm(preds[key] - preds["distractor_joints"], axis=-1)
    return ((d_t < d_d) & valid).sum(-1)

  gain = right("cascade_mrf") - right("cascade")
  return [int(i) for i in np.argsort(-gain, kind="stable")[:n]]


def overlays(config, source, preds, view: str, n: int) -> np.ndarray:
  """overlays.png: one column per scene; top row the cascade, bottom row cascade+MRF."""
  skeleton = from_config.skeleton(config)
  crop = from_config.crop(config)
  picked = _pick_scenes(preds, n)
  rows = {"cascade": [], "cascade_mrf": []}
  for k in picked:
    ex = source[k]
    if isinstance(ex["image"], bytes):  # dataset features, not a cached canvas
      ex = crop(ex)
    gt = preds["joints"][k] if np.all(preds["joints_valid"][k] > 0) else None
    for key, label in (("cascade", "without MRF"), ("cascade_mrf", "with MRF")):
      title = f"{view} #{int(preds['index'][k])}, {label}"
      rows[key].append(
        scene_tile(ex["image"], preds[key][k], skeleton, preds["torso_box"][k], gt, title)
      )
  return visualize.contact_sheet(rows["cascade"] + rows["cascade_mrf"], columns=len(picked))


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  out_dir: str = "",
  views: Sequence[str] = VIEWS,
  train_first: bool = True,
  num_overlays: int = 6,
  mesh: Mesh | None = None,
) -> dict:
  """Trains (resumable) or reuses `workdir`, fits the MRF, and writes the study.

  Args:
    config: a synthetic config whose dataset has distractors.
    workdir: the training run (created, resumed, or reused as it is).
    out_dir: default `workdir/mrf_study`.
    views: of `VIEWS`.
    train_first: run `train.train_and_evaluate` first (it resumes, and only
      evaluates when training is done); False: use the newest checkpoint.
    num_overlays: scenes in overlays.png (0: none).
    mesh: the data mesh (default: every device).

  Returns:
    The summary written to table.json.
  """
  _check_views(config, views)
  config = ml_collections.ConfigDict(config.to_dict())
  config.spatial_model.enabled = True
  out_dir = out_dir or os.path.join(workdir, "mrf_study")
  mesh = sharding.make_mesh() if mesh is None else mesh
  if train_first:
    train.train_and_evaluate(config, workdir, mesh=mesh)
  model = from_config.model(config)
  params, step = checkpoints.restore_params(workdir, from_config.abstract_params(config, mesh))
  alpha = float(max(config.eval.thresholds))
  summary = {
    "dataset": f"{config.tfds_name}/{config.tfds_config}",
    "split": config.eval_split,
    "step": step,
    "normalizer": config.eval.normalizer,
    "mrf_steps": int(config.spatial_model.steps),
    "mrf_learning_rate": float(config.spatial_model.learning_rate),
    "distractor_alpha": alpha,
    "views": {},
  }
  predict_fns = {}  # one compiled function per MRF graph and size
  shown = None
  for view in views:
    mrf, source, description = _fit_view(config, model, params, mesh, workdir, step, out_dir, view)
    preds = _predict_view(config, model, params, mesh, mrf, source, view, predict_fns)
    summary["views"][view] = _view_summary(config, view, preds, mrf, description, alpha)
    if shown is None or view == "image":  # the whole image shows both people
      shown = (view, source, preds)
  if jax.process_index() == 0:
    _write_outputs(config, out_dir, summary, shown, num_overlays)
  return summary


def _check_views(config: ml_collections.ConfigDict, views: Sequence[str]) -> None:
  """ValueError unless `views` is a non-empty subset of `VIEWS` that `config` can crop."""
  bad = [v for v in views if v not in VIEWS]
  if bad or not views:
    raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {tuple(views)}")
  if "image" in views and config.crop_mode not in _DEFAULT_BOX_SCALE:
    raise ValueError(
      f"view 'image' needs crop_mode 'extent' or 'scale_normalized', not {config.crop_mode!r}"
    )


def _fit_view(config, model, params, mesh: Mesh, workdir: str, step: int, out_dir: str, view: str):
  """The MRF of `view` (fitted, or loaded when saved) and the eval examples it is
  scored on: (`FittedMRF`, eval source, a description of the view).

  'person': the config's crop, the MRF saved in the workdir; 'image': whole images
  (`WholeImageView`) for fitting and scoring, the MRF in `out_dir/image_view`.
  """
  if view == "person":
    mrf = train.fit_spatial_model(config, model, params, mesh, workdir, step)
    source = from_config.eval_source(config, workdir)
    return mrf, source, f"the config's '{config.crop_mode}' person-centred crop"
  box_scale = config.box_scale or _DEFAULT_BOX_SCALE[config.crop_mode]
  train_src = WholeImageView(from_config.dataset_source(config, config.train_split), box_scale)
  mrf = train.fit_spatial_model(
    config,
    model,
    params,
    mesh,
    workdir,
    step,
    source=train_src,
    save_dir=os.path.join(out_dir, "image_view"),
  )
  raw = from_config.dataset_source(config, config.eval_split)
  source = WholeImageView(raw, box_scale, limit=config.max_eval_examples)
  return mrf, source, "the whole image, letterboxed (both people complete)"


def _predict_view(config, model, params, mesh: Mesh, mrf, source, view: str, predict_fns: dict):
  """`evaluator.predict_dataset` of the view's eval `source` with the MRF as the
  selector; the compiled function of each MRF graph and size is kept in `predict_fns`."""
  if mrf.spec not in predict_fns:
    predict_fns[mrf.spec] = inference.make_predict_fn(
      model,
      mesh,
      coarse_refine=config.eval.coarse_refine,
      selector=spatial_training.mrf_selector(mrf.spec),
    )
  return evaluator_lib.predict_dataset(
    predict_fns[mrf.spec],
    params,
    from_config.eval_batches(config, source),
    mesh,
    selector_params=jax.device_put(mrf.params, NamedSharding(mesh, PartitionSpec())),
    desc=f"{view} view",
  )


def _view_summary(config, view: str, preds: dict, mrf, description: str, alpha: float) -> dict:
  """table.json's entry of one view: its examples, the MRF's final loss and the
  rows of `view_rows`; logs the view's evaluation table."""
  skeleton = from_config.skeleton(config)
  scored = evaluator_lib.score(
    preds,
    skeleton,
    normalizer=config.eval.normalizer,
    thresholds=tuple(config.eval.thresholds),
    curve_max=config.eval.curve_max,
  )
  rates = right_person_rates(preds)
  summary = {
    "description": description,
    "num_examples": int(preds["index"].shape[0]),
    "num_with_distractor": rates["num_with_distractor"],
    "num_joints": rates["num_joints"],
    "mrf_loss": mrf.info.get("final_loss"),
    "rows": view_rows(preds, scored, config.eval.normalizer, alpha),
  }
  logging.info("view %s:\n%s", view, evaluator_lib.format_table(scored, f"{view} view"))
  return summary


def _write_outputs(config, out_dir: str, summary: dict, shown, num_overlays: int) -> None:
  """table.json, table.md (also printed), figure.png and, with `num_overlays`,
  overlays.png of the `shown` (view, source, predictions)."""
  fileio.write_json(os.path.join(out_dir, "table.json"), summary)
  text = format_markdown(summary)
  fileio.write_text(os.path.join(out_dir, "table.md"), text)
  plot_bars(summary, os.path.join(out_dir, "figure.png"))
  if num_overlays:
    view, source, preds = shown
    sheet = overlays(config, source, preds, view, num_overlays)
    fileio.save_image(os.path.join(out_dir, "overlays.png"), sheet)
  print(text, flush=True)
