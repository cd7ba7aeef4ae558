"""Evaluation: predictions over a split, the headline PCK/PCKh tables, curves and
σ, the `config.evals` evaluators; the `Evaluator` that training and offline
evaluation share.

An `Evaluator` (big_vision's pattern) is built once, from the config by
`heatpose_jax.evaluate.build_evaluator`; `run(params)` predicts the split once
with the one prediction path (`inference.make_predict_fn`), scores it with the
headline (`config.eval`: `score`, i.e. `evaluators.pck` + `evaluators.sigma`)
and then with every evaluator of `config.evals` (`heatpose_jax.evaluation.evaluators`), and
yields `(name, value)` scalars: the headline's as they always were
(`cascade/PCKh@0.5/Total`, `coarse/sigma_x/head_top`, `val_e1`, ...), each
other evaluator's prefixed by its name (`pck_torso/cascade/PCK@0.2/Total`).
The full result (tables, curves; the other evaluators' under `"evals"`) and the
predictions stay on the evaluator for files. Training logs the scalars every
`eval_every` steps; `evaluate.evaluate_checkpoint` (`python -m
experiments.evaluate`) writes the files of one checkpoint. Nothing here reads a
config: every function takes its arguments.

Scores are computed in the canvas frame (input pixels), where the normalizer was
scaled with the image (PCK is invariant to that similarity); the predictions
file, in the original image frame, gives the official numbers
(`experiments.evaluate_predictions`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from heatpose_jax.core import fileio, sharding
from heatpose_jax.data import dataset_specs
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import evaluators, metrics, prediction_io
from heatpose_jax.evaluation.evaluators import pck, sigma

# The estimates `score` scores when present (`evaluators.MODEL_KEYS`).
MODEL_KEYS = evaluators.MODEL_KEYS
metric_name = pck.metric_name
# The one table a command prints (the headline's, or any `pck` result's).
format_table = pck.format_table


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
    args = (params, sharding.to_global_array(batch, mesh))
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
  """The headline: PCK tables, per-joint curves and x-error σ of every estimate in
  `preds` (`evaluators.pck` and `evaluators.sigma` at 20 px, merged per estimate).

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
  pooled = dataset_specs.get(skeleton.name).pools if pools is None else tuple(pools)
  tables = pck.evaluate(
    preds,
    skeleton=skeleton,
    pools=pooled,
    normalizer=normalizer,
    thresholds=thresholds,
    curve_max=curve_max,
  )
  sigmas = sigma.evaluate(preds, skeleton=skeleton, pools=pooled)
  # The keys in the order results files have always had them.
  result = {k: tables[k] for k in ("num_examples", "normalizer", "metric")}
  if "e1_sum" in preds:
    result["val_e1"] = float(preds["e1_sum"].sum() / max(preds["e1_count"].sum(), 1.0))
  for m in evaluators.estimates(preds):
    result[m] = {**tables[m], **sigmas[m]}
  return result


def scalars(result: dict) -> Iterator[tuple[str, float]]:
  """`(name, value)` pairs of a `score` result: val_e1, then each estimate's table
  cells and σ (the names training logs as `eval/...` and the studies read)."""
  metric = result["metric"].split()[0]
  if "val_e1" in result:
    yield "val_e1", result["val_e1"]
  for m in evaluators.estimates(result):
    yield from pck.estimate_scalars(m, metric, result[m])
    yield from sigma.estimate_scalars(m, result[m])


def format_details(result: dict) -> str:
  """Every table and the σ of the x error, for table.txt."""
  models = evaluators.estimates(result)
  lines = [f"examples: {result['num_examples']}"]
  for t in result[models[0]]["table"]:
    lines.append(f"\n{result['metric']} @ {t}")
    lines.append(metrics.format_rows({m: result[m]["table"][t] for m in models}))
  lines.append(f"\nsigma of the x error (input px, |e| <= {sigma.OUTLIER_PX:g}):")
  lines.append(metrics.format_rows({m: result[m]["sigma_x"] for m in models}))
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
  """The headline PCK/PCKh and the `evals` of a model on one split, over one
  prediction pass (big_vision's evaluator pattern).

  Args:
    predict_fn: `inference.make_predict_fn(...)`.
    batches: returns a fresh evaluation stream (`from_config.eval_batches`).
    mesh: the data mesh.
    skeleton, normalizer, thresholds, curve_max, pools: the headline; see `score`.
    num_examples: for the progress bar.
    selector_params: the selector's parameters (the MRF's), if `predict_fn` has one.
    protocol: named beside the metric (FLIC's).
    evals: `{name: dict(type=MODULE, **kwargs)}` (`config.evals`), run after the
      headline on the same predictions (`evaluators.load_all`).
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
    evals: Mapping[str, Mapping] | None = None,
  ):
    self.predict_fn, self.batches, self.mesh = predict_fn, batches, mesh
    self.skeleton, self.pools = skeleton, pools
    self.normalizer, self.thresholds, self.curve_max = normalizer, tuple(thresholds), curve_max
    self.num_examples, self.selector_params, self.protocol = num_examples, selector_params, protocol
    # A bad entry fails before anything runs.
    self.evals = evaluators.load_all(evals or {}, skeleton=skeleton)
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
    """Predicts the split once and scores it; yields `(name, value)`: the
    headline's (`scalars`), then each evaluator's as `NAME/...`. `self.result`
    is the headline's result, with `"evals": {name: result}` when there are any."""
    self.preds = self.predictions(params)
    pools = tuple(dataset_specs.get(self.skeleton.name).pools if self.pools is None else self.pools)
    self.result = score(
      self.preds,
      self.skeleton,
      normalizer=self.normalizer,
      thresholds=self.thresholds,
      curve_max=self.curve_max,
      pools=pools,
    )
    self.result["metric"] = metric_name(self.normalizer, self.protocol)
    yield from scalars(self.result)
    if not self.evals:
      return  # the result as it was before `evals` existed
    self.result["evals"] = {}
    for name, (module, kwargs) in self.evals.items():
      out = module.evaluate(self.preds, skeleton=self.skeleton, pools=pools, **kwargs)
      self.result["evals"][name] = out
      for key, value in module.scalars(out):
        yield f"{name}/{key}", value

  def format_evals(self) -> str:
    """The `format_table` text of each evaluator that has one, after `run`."""
    parts = []
    for name, (module, _) in self.evals.items():
      if callable(getattr(module, "format_table", None)):
        parts.append(f"{name}:\n{module.format_table(self.result['evals'][name])}")
    return "\n\n".join(parts)


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
