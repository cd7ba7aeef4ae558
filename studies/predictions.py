"""Predictions of the runs' checkpoints, cached on disk, and the metrics the
paper's experiments take from them.

`PredictionCache.predictions(run, step)` restores a checkpoint's parameters
(`checkpoints.restore_params`, nothing compiled to build them), predicts the
evaluation split with the one prediction path (`inference.make_predict_fn`, with
the coarse loss E1 per example from `loss_codec`), and keeps the arrays as
`<run>/paper_eval/step<S>_<crop>_<digest>.npz`: a second invocation reads them.
Predictions are in the canvas frame (input pixels), dropout off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from heatpose_jax import from_config
from heatpose_jax.core import fileio
from heatpose_jax.data import input_pipeline
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.evaluation import metrics
from heatpose_jax.model import inference
from heatpose_jax.training import checkpoints
from studies import runs as runs_lib

HIST_RANGE_PX = 20.0  # the paper's outlier bound: histograms and σ use |e| <= 20


def eval_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A run's config for inference: dropout off (no parameter changes), so that
  runs differing only in dropout share one compiled prediction function."""
  return runs_lib.apply_overrides(config, {"model.dropout": "none", "canvas_cache": False})


class PredictionCache:
  """Predictions of runs' checkpoints on the eval split: on disk per (run, step,
  crop), in memory per process, one compiled function per architecture."""

  def __init__(self, mesh: Mesh):
    self.mesh = mesh
    self._fns: dict[str, Callable] = {}
    self._preds: dict[str, dict[str, np.ndarray]] = {}

  def _fn(self, config: ml_collections.ConfigDict) -> Callable:
    key = json.dumps(
      [config.model.to_dict(), config.dtype, config.eval.coarse_refine, config.eval.fuse_coarse],
      sort_keys=True,
      default=str,
    )
    if key not in self._fns:
      model = from_config.model(config)
      self._fns[key] = inference.make_predict_fn(
        model,
        self.mesh,
        coarse_refine=config.eval.coarse_refine,
        loss_codec=model.coarse_codec,
        fuse_coarse=config.eval.fuse_coarse,
      )
    return self._fns[key]

  def predictions(
    self,
    run: runs_lib.Run,
    step: int | None = None,
    *,
    crop_mode: str | None = None,
    image_scale: float | None = None,
  ) -> dict[str, np.ndarray]:
    """Predictions of `run`'s checkpoint `step` (default: the final one) on the
    eval split, optionally cropped with another crop mode / image scale.

    Returns:
      `evaluator.predict_dataset` arrays: `coarse`, `cascade` `(N, J, 2)` canvas
      px, `scores`, the batch fields, and `e1_sum`, `e1_count` `(N,)`.
    """
    step = run.total if step is None else step
    cfg = eval_config(run.config)
    if crop_mode is not None:
      cfg = runs_lib.apply_overrides(
        cfg, {"crop_mode": crop_mode, "image_scale": image_scale or 0.0}
      )
    key_fields = [
      cfg.tfds_name,
      cfg.tfds_config,
      cfg.eval_split,
      cfg.crop_mode,
      cfg.image_scale,
      cfg.box_scale,
      list(cfg.input_hw),
      cfg.max_eval_examples,
      cfg.eval.coarse_refine,
      cfg.eval.fuse_coarse,
    ]
    digest = hashlib.sha1(json.dumps(key_fields).encode()).hexdigest()[:10]
    path = os.path.join(run.directory, "paper_eval", f"step{step}_{cfg.crop_mode}_{digest}.npz")
    if path in self._preds:
      return self._preds[path]
    if os.path.exists(path):
      with np.load(path) as z:
        preds = {k: z[k] for k in z.files}
    else:
      if step not in runs_lib.checkpoint_steps(run.directory):
        raise FileNotFoundError(f"run {run.directory} has no checkpoint at step {step}")
      abstract = from_config.abstract_params(run.config, self.mesh)
      params, _ = checkpoints.restore_params(run.directory, abstract, step)
      source = from_config.eval_source(cfg, run.directory)
      preds = evaluator_lib.predict_dataset(
        self._fn(cfg), params, from_config.eval_batches(cfg, source), self.mesh
      )
      if jax.process_index() == 0:
        fileio.write_npz(path, **preds)
    self._preds[path] = preds
    return preds


# --- metrics of predictions --------------------------------------------------------


def pck_columns(
  preds: dict[str, np.ndarray],
  key: str,
  skeleton: joints_lib.Skeleton,
  normalizer: str,
  alphas: Sequence[float],
) -> dict[str, np.ndarray]:
  """PCK (%) over `alphas` of the table's columns and "All" (pooled over the scored joints).

  Args:
    preds: `PredictionCache.predictions` output.
    key: 'coarse' or 'cascade'.
    skeleton: the dataset's joints.
    normalizer: 'head_size' (PCKh) or 'torso_size'.
    alphas: thresholds.

  Returns:
    column -> `(len(alphas),)` percentages.
  """
  rates, counts = metrics.pck_curve(
    preds[key], preds["joints"], preds["joints_valid"] > 0, preds[normalizer], np.asarray(alphas)
  )
  out = {
    k: np.asarray(v, np.float64) for k, v in metrics.table(rates, counts, skeleton, False).items()
  }
  idx = np.flatnonzero(skeleton.scored_mask)
  c = counts[idx].astype(np.float64)
  out["All"] = (np.where(c > 0, rates[:, idx], 0.0) * c).sum(-1) / max(c.sum(), 1.0)
  return out


def x_errors(preds: dict[str, np.ndarray], key: str, joint_idx: Sequence[int]) -> np.ndarray:
  """x_pred − x_gt (input px) of the valid (example, joint) pairs of `joint_idx`."""
  idx = np.asarray(joint_idx)
  err = preds[key][:, idx, 0] - preds["joints"][:, idx, 0]
  return err[preds["joints_valid"][:, idx] > 0]


def sigma_x(preds: dict[str, np.ndarray], key: str, joint_idx: Sequence[int]) -> tuple[float, int]:
  """`metrics.x_error_sigma` pooled over `joint_idx` (|e| ≤ 20 px kept): (σ, removed)."""
  idx = np.asarray(joint_idx)
  return metrics.x_error_sigma(
    preds[key][:, idx], preds["joints"][:, idx], preds["joints_valid"][:, idx] > 0, HIST_RANGE_PX
  )


def label_noise_sigma(
  source,
  skeleton: joints_lib.Skeleton,
  columns: dict[str, np.ndarray],
  *,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  image_scale: float | None,
  box_scale: float | None,
) -> dict[str, float] | None:
  """The σ of the injected label noise in x per table column, input (canvas) px.

  Measured on the dataset's `joints − joints_clean` (synthetic people store
  both) times each example's canvas scale; None when the dataset has no clean
  joints (FLIC, MPII: "n/a").
  """
  if len(source) == 0 or "joints_clean" not in source[0]:
    return None
  errs = {c: [] for c in columns}
  mi = skeleton.model_indices
  for i in range(len(source)):
    ex = source[i]
    m = input_pipeline.crop_transform(
      ex, crop_mode=crop_mode, canvas_hw=canvas_hw, image_scale=image_scale, box_scale=box_scale
    )
    d = (np.asarray(ex["joints"])[mi, 0] - np.asarray(ex["joints_clean"])[mi, 0]) / m[0, 0]
    valid = np.asarray(ex["joints_valid"], bool)[mi]
    for c, idx in columns.items():
      errs[c].append(d[idx][valid[idx]])
  return {c: float(np.std(np.concatenate(v))) if v else float("nan") for c, v in errs.items()}
