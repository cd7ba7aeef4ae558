"""Evaluation of a run from its config: the `Evaluator` of `config.eval_split`
(`build_evaluator`, which training uses every `eval_every` steps) and the files of
one checkpoint (`evaluate_checkpoint`, `python -m experiments.evaluate`).

The config is read here and turned into the explicit arguments of
`evaluator.Evaluator` (the library: prediction pass, headline, `config.evals`,
tables and curves), `inference.make_predict_fn` and the MRF's selector.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from heatpose_jax import from_config
from heatpose_jax.core import fileio, sharding
from heatpose_jax.evaluation import evaluator as evaluator_lib
from heatpose_jax.evaluation import visualize
from heatpose_jax.evaluation.evaluators import oks
from heatpose_jax.model import inference
from heatpose_jax.mrf import spatial_training
from heatpose_jax.training import checkpoints


def build_evaluator(
  config: ml_collections.ConfigDict,
  model,
  mesh: Mesh,
  workdir: str,
  *,
  mrf: spatial_training.FittedMRF | None = None,
  split: str = "",
  keep_heatmaps: bool = False,
) -> evaluator_lib.Evaluator:
  """The evaluator of `config.eval_split` (or `split`): coarse and cascade, their
  MRF variants with a fitted `mrf`, and the validation E1, scored by the headline
  (`config.eval`) and by `config.evals`."""
  source = from_config.eval_source(config, workdir, split)
  predict_fn = inference.make_predict_fn(
    model,
    mesh,
    coarse_refine=config.eval.coarse_refine,
    selector=None if mrf is None else spatial_training.mrf_selector(mrf.spec),
    keep_heatmaps=keep_heatmaps,
    loss_codec=model.coarse_codec,
    flip_perm=flip_perm(config),
    fuse_coarse=config.eval.get("fuse_coarse", False),
  )
  selector_params = None
  if mrf is not None:
    selector_params = jax.device_put(mrf.params, NamedSharding(mesh, PartitionSpec()))
  evaluator = evaluator_lib.Evaluator(
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
    evals=config.get("evals", {}),
  )
  evaluator.source = source
  return evaluator


def flip_perm(config: ml_collections.ConfigDict) -> tuple[int, ...] | None:
  """The skeleton's flip permutation when `config.eval.flip_test` (a config from
  before the option: off), else None."""
  if not config.eval.get("flip_test", False):
    return None
  return tuple(int(i) for i in from_config.skeleton(config).flip_permutation)


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
  predictions.mat (original image frame, `write_predictions_file`; COCO-format
  datasets: keypoint_results.json, COCO's results format) and
  overlay_<index>.png (prediction in red, ground truth in green). With
  `spatial_model` and an MRF saved in `workdir`, the MRF variants `coarse_mrf`
  / `cascade_mrf` are scored too and the cascade+MRF estimates go to
  predictions_mrf.mat. The evaluators of `config.evals` go into results.json
  under `"evals"` and their tables (`format_table`, where they have one) at
  the end of table.txt. Only the parameters are restored (no optimizer state,
  nothing compiled to build them). The dataset's spec is the run's own
  (`from_config.use_run_spec`: its dataset_spec.json) where it has one. With
  `config.eval.flip_test`, every estimate is the flip test's (results.json's
  `flip_test`); `config.eval.fuse_coarse` likewise (`fuse_coarse`).
  """
  from_config.use_run_spec(workdir, config)
  from_config.check(config)
  split = split or config.eval_split
  mesh = sharding.make_mesh() if mesh is None else mesh
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
  result = evaluator.result
  result["step"] = step
  result["flip_test"] = flip_perm(config) is not None
  result["fuse_coarse"] = bool(config.eval.get("fuse_coarse", False))
  title = f"{config.dataset} {split}, step {step}" + (", flip test" if result["flip_test"] else "")
  evals_text = evaluator.format_evals()
  if jax.process_index() == 0:
    out = os.path.join(workdir, f"eval_{split}")
    _write_outputs(config, evaluator, out, split, title, evals_text, num_overlays)
  print(evaluator_lib.format_table(result, title), flush=True)
  if evals_text:
    print(evals_text, flush=True)
  return result


def _write_outputs(
  config,
  evaluator: evaluator_lib.Evaluator,
  out: str,
  split: str,
  title: str,
  evals_text: str,
  num: int,
) -> None:
  """`evaluate_checkpoint`'s files in `out` (its docstring names them)."""
  result = evaluator.result
  fileio.write_json(os.path.join(out, "results.json"), result)
  text = (
    f"{title}\n{evaluator_lib.format_table(result)}\n\n{evaluator_lib.format_details(result)}\n"
  )
  fileio.write_text(
    os.path.join(out, "table.txt"), text + (f"\n{evals_text}\n" if evals_text else "")
  )
  evaluator_lib.plot_curves(result, os.path.join(out, "pck_curves.png"), title)
  _write_predictions_files(config, evaluator.preds, result, out)
  _write_overlays(config, evaluator, out, split, num)


def _write_predictions_files(config, preds: dict, result: dict, out: str) -> None:
  """predictions.mat (cascade) and predictions_mrf.mat (cascade + MRF), image frame,
  in the split's order; for a COCO-format dataset keypoint_results.json (and
  keypoint_results_mrf.json) instead: COCO keypoint results, as `experiments.predict
  --boxes` writes them (`evaluate_predictions --dataset=coco` reads them). Their paths
  go into `result`."""
  spec = from_config.dataset_spec(config)
  order = np.argsort(preds["index"], kind="stable")
  for key in ("cascade", "cascade_mrf"):
    if key not in preds:
      continue
    suffix = key[len("cascade") :]
    if spec.prediction_format == "coco":
      path = os.path.join(out, f"keypoint_results{suffix}.json")
      found = oks.results(preds, key)
      fileio.write_json(path, [found[i] for i in order])
    else:
      xy = inference.canvas_to_image_points(preds[key], preds["canvas_to_image"])[order]
      path = evaluator_lib.write_predictions_file(
        spec, xy, os.path.join(out, f"predictions{suffix}.mat")
      )
    result[f"predictions_file{suffix}"] = path


def _write_overlays(
  config, evaluator: evaluator_lib.Evaluator, out: str, split: str, num: int
) -> None:
  """overlay_<index>.png of the first `num` examples (the cascade in red, the labels in
  green) and overlays.png, all of them on one sheet, four to a row."""
  preds, source = evaluator.preds, evaluator.source
  skeleton, crop = from_config.skeleton(config), from_config.crop(config)
  tiles = []
  for k in range(min(num, len(preds["index"]))):
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
    tiles.append(over)
  if tiles:
    fileio.save_image(os.path.join(out, "overlays.png"), visualize.contact_sheet(tiles, 4))
