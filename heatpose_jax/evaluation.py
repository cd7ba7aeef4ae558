"""Prediction over a dataset and its scoring: the paper-style tables and curves.

Library functions with explicit arguments; `train.evaluate_from_config` wires a
config to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import codec, input_pipeline, metrics
from heatpose_jax import joints as joints_lib

# The estimates `score` scores when present: the coarse argmax, the cascade, and
# the same with the MRF spatial model's person selection (`spatial_training`).
MODEL_KEYS = ("coarse", "cascade", "coarse_mrf", "cascade_mrf")


def make_predict_fn(model, mesh: Mesh, *, coarse_refine: bool = False, keep_heatmaps: bool = False):
  """A jitted `(params, batch) -> dict` of predictions for a global batch.

  Returns the input-frame `(B, J, 2)` estimates `coarse` (the coarse model's
  argmax, sub-pixel refined when `coarse_refine`) and `cascade` (coarse + fine
  offset), `coarse_heatmaps` `(B, h, w, J)` with `keep_heatmaps`, and every batch
  field but the image, all replicated so that every host sees the whole batch.
  """
  stride = model.coarse.stride

  def predict(params, batch):
    images = batch["image"].astype(jnp.float32) / 255.0
    out = model.apply({"params": params}, images, train=False)
    coarse, _ = codec.decode_coarse(out["coarse_heatmaps"], stride, refine=coarse_refine)
    result = {k: v for k, v in batch.items() if k != "image"}
    result.update(coarse=coarse, cascade=out["xy"])
    if keep_heatmaps:
      result["coarse_heatmaps"] = out["coarse_heatmaps"]
    return result

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(predict, out_shardings=replicated)


def predict_dataset(predict_fn: Callable, params, batches: Iterable[dict], mesh: Mesh) -> dict:
  """Runs `predict_fn` over an evaluation stream (padded batches with `_mask`).

  Returns:
    dict of numpy arrays over the real examples (`_mask` True) of all hosts:
    `coarse`, `cascade` `(N, J, 2)` canvas frame, and the batch's fields
    (`joints`, `joints_valid`, `head_size`, `torso_size`, `torso_box`,
    `canvas_to_image`, `index`, ...).
  """
  parts: dict[str, list] = {}
  for batch in batches:
    out = jax.device_get(predict_fn(params, input_pipeline.to_global_array(batch, mesh)))
    mask = np.asarray(out.pop("_mask"), bool)
    for k, v in out.items():
      parts.setdefault(k, []).append(np.asarray(v)[mask])
  return {k: np.concatenate(v) for k, v in parts.items()}


def to_image_frame(xy: np.ndarray, canvas_to_image: np.ndarray) -> np.ndarray:
  """Canvas (x, y) `(N, J, 2)` → original-image (x, y) with `(N, 2, 3)` affines."""
  return np.einsum("nij,nkj->nki", canvas_to_image[:, :, :2], xy) + canvas_to_image[:, None, :, 2]


def score(
  preds: dict[str, np.ndarray],
  skeleton: joints_lib.Skeleton,
  *,
  normalizer: str,
  thresholds: Sequence[float],
  curve_max: float,
) -> dict:
  """PCK tables, per-joint curves and x-error σ of the coarse and cascade estimates.

  Scored in the canvas frame, where the normalizer was scaled with the image (PCK
  is invariant to that similarity); joints outside the canvas are not scored here
  (the predictions file, in the original frame, gives the official numbers).

  Args:
    preds: `predict_dataset` output.
    skeleton: the dataset's joints.
    normalizer: 'head_size' (PCKh) or 'torso_size' (PCK).
    thresholds: α values of the tables.
    curve_max: the curves run over α in [0, curve_max].

  Returns:
    JSON-ready dict: {model: {"table": {α: {column: %}}, "curve": {"alpha": [...],
    column: [...]}, "per_joint_curve": {joint: [...]}, "sigma_x": {joint: σ},
    "sigma_x_removed": n}} for each model of `MODEL_KEYS` in `preds` ("coarse",
    "cascade", and "coarse_mrf", "cascade_mrf" with the spatial model), plus
    "num_examples".
  """
  if normalizer not in ("head_size", "torso_size"):
    raise ValueError(f"eval normalizer must be 'head_size' or 'torso_size', got {normalizer!r}")
  gt, valid, norm = preds["joints"], preds["joints_valid"] > 0, preds[normalizer]
  pooled = len(skeleton.table) > 4  # the FLIC table has no UBody / Total
  alphas = np.linspace(0.0, curve_max, 21)
  result = {"num_examples": int(gt.shape[0])}
  for name in (m for m in MODEL_KEYS if m in preds):
    p = preds[name]
    tables = metrics.pck_tables(p, gt, valid, norm, skeleton, thresholds, pooled)
    rates, counts = metrics.pck_curve(p, gt, valid, norm, alphas)
    curve = metrics.table(rates, counts, skeleton, pooled)
    sig = {}
    removed = 0
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


def format_results(result: dict) -> str:
  """Text tables of `score`'s output, one block per threshold."""
  lines = [f"examples: {result['num_examples']}"]
  for t in result["coarse"]["table"]:
    rows = {m: result[m]["table"][t] for m in MODEL_KEYS if m in result}
    lines.append(f"\nPCK @ {t}")
    lines.append(metrics.format_table(rows))
  sig = {m: result[m]["sigma_x"] for m in MODEL_KEYS if m in result}
  lines.append("\nsigma of the x error (input px, |e| <= 20):")
  lines.append(metrics.format_table(sig))
  return "\n".join(lines)


def plot_curves(result: dict, path: str, title: str) -> None:
  """PNG of the coarse and cascade (and MRF, when scored) PCK curves of every table column."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cols = [c for c in result["coarse"]["curve"] if c != "alpha"]
  n = len(cols)
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
  for ax, col in zip(axes[0], cols, strict=True):
    styles = (("coarse", "--"), ("cascade", "-"), ("coarse_mrf", ":"), ("cascade_mrf", "-."))
    for m, style in ((m, s) for m, s in styles if m in result):
      ax.plot(result[m]["curve"]["alpha"], result[m]["curve"][col], style, label=m)
    ax.set_title(col)
    ax.set_xlabel("normalized distance")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("detection rate, %")
  axes[0][0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save_fig_atomic(fig, path)
  plt.close(fig)


def _save_fig_atomic(fig, path: str) -> None:
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=90)
  os.replace(tmp, path)


def write_json_atomic(obj, path: str) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(tmp, path)


def draw_skeletons(
  image: np.ndarray, xy: np.ndarray, skeleton: joints_lib.Skeleton, color=(255, 60, 60), gt=None
) -> np.ndarray:
  """An RGB uint8 overlay of predicted joints `(J, 2)` (and `gt` in green)."""
  from PIL import Image, ImageDraw

  im = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
  d = ImageDraw.Draw(im)
  r = max(1.0, im.size[0] / 128)
  for pts, col in ((gt, (60, 220, 60)), (xy, color)):
    if pts is None:
      continue
    for a, b in skeleton.limb_indices:
      d.line([tuple(pts[a]), tuple(pts[b])], fill=col, width=max(1, int(r)))
    for x, y in pts:
      d.ellipse([x - r, y - r, x + r, y + r], outline=col)
  return np.asarray(im)
