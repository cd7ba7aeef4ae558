"""Everything a config turns into: the model, codecs, augmentation, optimizers,
the train step of a phase, data sources and batch streams.

The one module (with the top-level `train_and_evaluate`, `evaluation` and
`Predictor.from_workdir` that call it) that reads an `ml_collections` config;
the objects it builds take explicit, typed arguments. `check` turns a bad
config into one line naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax.numpy as jnp
import ml_collections

from heatpose_jax.core import fileio
from heatpose_jax.data import (
  augment,
  canvas_cache,
  dataset_specs,
  datasets,
  flic_labels,
  input_pipeline,
)
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.evaluation import evaluators
from heatpose_jax.model import models
from heatpose_jax.training import train_step as step_lib

CONFIG_FILE = "config.json"


class ConfigError(ValueError):
  """A config field with a value that cannot work (the message names the field)."""


def check(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming the first field that cannot work."""

  def need(ok, field, why):
    if not ok:
      value = config
      for part in field.split("."):
        value = value[part] if part in value else "(missing)"
      raise ConfigError(f"config.{field}={value!r}: {why}")

  spec = dataset_spec(config)
  need(config.dtype in ("float32", "bfloat16"), "dtype", "must be 'float32' or 'bfloat16'")
  _check_model(config, need)
  _check_data(config, need)
  _check_phases(config, need)
  for field in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    need(config[field] > 0, field, "must be > 0")
  _check_eval(config, need)
  try:  # imports each evaluator's module and binds its arguments
    evaluators.load_all(config.get("evals", {}), where="config.evals", skeleton=spec.skeleton)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _check_model(config: ml_collections.ConfigDict, need) -> None:
  m = config.model
  need(m.variant in models.BANKS, "model.variant", f"known: {sorted(models.BANKS)}")
  need(m.pool_factor in (4, 8, 16), "model.pool_factor", "must be 4, 8 or 16")
  need(
    m.dropout in ("spatial", "standard", "none"),
    "model.dropout",
    "must be 'spatial', 'standard' or 'none'",
  )
  need(0 <= m.dropout_rate < 1, "model.dropout_rate", "must be in [0, 1)")
  need(
    m.context > 0 and m.context % models.CROP_ALIGN == 0,
    "model.context",
    f"must be a positive multiple of {models.CROP_ALIGN}",
  )
  need(m.width > 0, "model.width", "must be > 0")
  need(m.early_width >= 0, "model.early_width", "must be >= 0 (0: model.width)")
  need(m.context_blocks >= 0, "model.context_blocks", "must be >= 0")
  need(m.sigma_coarse > 0, "model.sigma_coarse", "must be > 0")
  need(m.sigma_fine > 0, "model.sigma_fine", "must be > 0")
  h, w = config.input_hw
  need(
    h >= m.pool_factor and w >= m.pool_factor,
    "input_hw",
    "each side must be at least the pooling factor",
  )


def _check_data(config: ml_collections.ConfigDict, need) -> None:
  """The input side: crops, batches, augmentation."""
  need(
    config.crop_mode in input_pipeline.CROP_MODES,
    "crop_mode",
    f"known: {input_pipeline.CROP_MODES}",
  )
  need(config.image_scale >= 0, "image_scale", "must be >= 0 (0: the crop mode's default)")
  need(config.label_noise >= 0, "label_noise", "must be >= 0 (canvas pixels)")
  need(config.box_scale >= 0, "box_scale", "must be >= 0 (0: the crop mode's default)")
  need(config.batch_size > 0, "batch_size", "must be > 0")
  need(
    config.get("max_eval_examples", 0) >= 0,
    "max_eval_examples",
    "must be >= 0 (0: the whole split)",
  )
  need(config.augment.rotation >= 0, "augment.rotation", "must be >= 0 (degrees)")
  lo, hi = config.augment.scale
  need(0 < lo <= hi, "augment.scale", "must be (low, high) with 0 < low <= high")
  need(0 <= config.augment.flip <= 1, "augment.flip", "must be a probability")


def _check_eval(config: ml_collections.ConfigDict, need) -> None:
  need(
    config.eval.normalizer in ("head_size", "torso_size"),
    "eval.normalizer",
    "must be 'head_size' (PCKh) or 'torso_size' (PCK)",
  )
  if config.dataset == "flic":
    need(
      config.get("flic_protocol", "") in flic_labels.PROTOCOLS,
      "flic_protocol",
      f"known: {flic_labels.PROTOCOLS}",
    )
  need(
    len(config.eval.thresholds) > 0 and min(config.eval.thresholds) >= 0,
    "eval.thresholds",
    "must be a non-empty list of values >= 0",
  )
  for key in ("flip_test", "fuse_coarse"):
    need(isinstance(config.eval.get(key, False), bool), f"eval.{key}", "must be True or False")


def _check_phases(config: ml_collections.ConfigDict, need) -> None:
  order = tuple(config.phase_order)
  need(len(set(order)) == len(order), "phase_order", "names a phase twice")
  for name in order:
    need(name in config.phases, "phase_order", f"names {name!r}, which config.phases lacks")
  for name in sorted(set(config.phases) - set(order)):
    raise ConfigError(f"config.phases.{name} is not in config.phase_order: list it or remove it")
  for name in order:
    p = config.phases[name]
    need(p.steps >= 0, f"phases.{name}.steps", "must be >= 0")
    need(p.learning_rate > 0, f"phases.{name}.learning_rate", "must be > 0")
    try:
      phase(config, name)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      raise ConfigError(f"config.phases.{name}: {e}") from None
  need(
    sum(config.phases[n].steps for n in order) > 0,
    "phases",
    "every phase has 0 steps: nothing to train",
  )


def check_devices(config: ml_collections.ConfigDict, mesh) -> None:
  n = mesh.devices.size
  if config.batch_size % n:
    raise ConfigError(
      f"config.batch_size={config.batch_size}: must divide by the {n} devices of the mesh"
    )


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """An unlocked copy of `config` with dotted-key overrides set ({"model.pool_factor": 4})."""
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
      node = node[p]
    node[leaf] = value
  return out


def dataset_spec(config: ml_collections.ConfigDict) -> dataset_specs.DatasetSpec:
  """`config.dataset`'s spec, after importing `config.dataset_module`: the spec of the
  run `use_run_spec` read for this config, else `datasets.find_spec`'s."""
  dataset_specs.import_modules(config.get("dataset_module", ""), "config.dataset_module")
  run = _RUN_SPECS.get(_spec_key(config))
  if run is not None:
    return dataset_specs.register(run, replace=True)
  spec = datasets.find_spec(
    config.dataset,
    tfds_name=config.tfds_name,
    config_name=config.tfds_config,
    data_dir=config.data_dir,
  )
  if spec is None:
    known = sorted(dataset_specs.SPECS)
    raise ConfigError(
      f"config.dataset={config.dataset!r}: known: {known} (or config.dataset_module)"
    )
  return spec


def skeleton(config: ml_collections.ConfigDict) -> joints_lib.Skeleton:
  return dataset_spec(config).skeleton


# The specs runs were trained with (`use_run_spec`), by the config fields that find a
# spec (`_spec_key`): `dataset_spec` returns them before a data dir's build.
_RUN_SPECS: dict[tuple, dataset_specs.DatasetSpec] = {}


def _spec_key(config: ml_collections.ConfigDict) -> tuple:
  return (
    config.dataset,
    config.tfds_name,
    config.tfds_config,
    config.data_dir,
    config.get("dataset_module", ""),
  )


def save_run_spec(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `config`'s dataset spec (`dataset_spec`) to `WORKDIR/dataset_spec.json`,
  in the layout of a build's metadata (`dataset_specs.write_spec_file`); its path.

  Training writes it (process 0) before its first step: the joints, flip pairs,
  limbs and crop the run's checkpoints mean, which `use_run_spec` reads back.
  """
  path = os.path.join(workdir, dataset_specs.RUN_SPEC_FILE)
  dataset_specs.write_spec_file(path, dataset_spec(config))
  return path


def use_run_spec(workdir: str, config: ml_collections.ConfigDict):
  """Makes the spec `workdir` was trained with (`save_run_spec`) `config`'s dataset
  spec in this process (`dataset_spec`), before the data dir's build; returns it.

  Only where the joints are not the library's to know: a dataset whose spec comes
  from its build (`from_build`: COCO format) or that nothing registers (a
  `config.dataset_module` that cannot be imported here is still an error). So a
  COCO-format run keeps its skeleton (names, flip pairs, limbs) and box crop when
  its data dir is gone or holds another build (a warning names the difference).
  Returns None and changes nothing for a workdir without the file (a run from
  before it was written: the data dir's build, else the registered spec, as
  before), a spec of another dataset than `config.dataset`, or a registered one.

  Raises:
    ValueError: a dataset_spec.json that is not a spec (one line naming it).
  """
  path = os.path.join(workdir, dataset_specs.RUN_SPEC_FILE)
  spec = dataset_specs.read_spec_file(path)
  if spec is None or spec.name != config.dataset:
    return None
  dataset_specs.import_modules(config.get("dataset_module", ""), "config.dataset_module")
  registered = dataset_specs.SPECS.get(spec.name)
  if registered is not None and not registered.from_build:
    return None
  try:
    built = datasets.built_spec(config.tfds_name, config.tfds_config, config.data_dir)
  except (OSError, ValueError):
    built = None
  if built is not None and built.name == spec.name and built.skeleton != spec.skeleton:
    logging.warning(
      "%s: the run's joints %s differ from the build's in %s %s: using the run's",
      path,
      list(spec.skeleton.model_joints),
      datasets.default_data_dir(config.data_dir),
      list(built.skeleton.model_joints),
    )
  _RUN_SPECS[_spec_key(config)] = spec
  return dataset_specs.register(spec, replace=True)


def protocol(config: ml_collections.ConfigDict) -> str:
  """FLIC's protocol (training labels, torso normalizer; named beside FLIC numbers), else ''."""
  return config.get("flic_protocol", "") if config.dataset == "flic" else ""


def dtype(config: ml_collections.ConfigDict):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]


def model(config: ml_collections.ConfigDict) -> models.CascadeModel:
  """The cascade that `config.model` describes (the standard cascade if asked),
  with its codecs (`model.coarse_codec`, `model.fine_codec`: target σ from the config)."""
  m = config.model
  return models.make_model(
    num_joints=skeleton(config).num_joints,
    variant=m.variant,
    pool_factor=m.pool_factor,
    width=m.width,
    head_features=tuple(m.head_features),
    early_width=m.early_width,
    context_blocks=m.context_blocks,
    global_context=m.global_context,
    fine_convs=tuple(tuple(c) for c in m.fine_convs),
    fine_merge_features=m.fine_merge_features,
    context=m.context,
    sigma_coarse=m.sigma_coarse,
    sigma_fine=m.sigma_fine,
    dropout=m.dropout,
    dropout_rate=m.dropout_rate,
    norm=m.norm,
    head_norm=m.head_norm,
    standard_cascade=m.standard_cascade,
    dtype=dtype(config),
  )


def augmentation(config: ml_collections.ConfigDict) -> augment.Augmentation:
  return augment.Augmentation(
    flip_perm=tuple(int(i) for i in skeleton(config).flip_permutation),
    max_rotation_deg=float(config.augment.rotation),
    scale_range=tuple(float(s) for s in config.augment.scale),
    flip_prob=float(config.augment.flip),
  )


def phase(config: ml_collections.ConfigDict, name: str) -> step_lib.Phase:
  """`config.phases[name]` as a `train_step.Phase`."""
  p = config.phases[name]
  return step_lib.Phase(
    name=name,
    steps=int(p.steps),
    train=tuple(p.train),
    loss_weights=tuple(float(w) for w in p.loss_weights),
    learning_rate=float(p.learning_rate),
    warmup_steps=int(p.warmup_steps),
    weight_decay=float(p.weight_decay),
    grad_clip=float(p.grad_clip),
  )


def phases(config: ml_collections.ConfigDict) -> list[step_lib.Phase]:
  """The phases with steps, in `config.phase_order`."""
  return [phase(config, n) for n in config.phase_order if config.phases[n].steps]


def phase_bounds(config: ml_collections.ConfigDict) -> list[tuple[str, int, int]]:
  """[(phase, first step, end step)] of the phases with steps, in order."""
  out, start = [], 0
  for p in phases(config):
    out.append((p.name, start, start + p.steps))
    start += p.steps
  return out


def total_steps(config: ml_collections.ConfigDict) -> int:
  return sum(p.steps for p in phases(config))


def phase_end(config: ml_collections.ConfigDict, name: str) -> int:
  """The global step at which phase `name` ends (0 when it has no steps): e.g. the
  checkpoint of the coarse model trained alone (the studies' "phase 1")."""
  return next((end for n, _, end in phase_bounds(config) if n == name), 0)


def train_step(config: ml_collections.ConfigDict, name: str, mesh, *, donate: bool = True):
  """`train_step.make_train_step` of the phase `name`, with the config's
  augmentation and codecs; `augment.window_jitter` from heat-map cells to input px."""
  net = model(config)
  return step_lib.make_train_step(
    phase(config, name),
    mesh=mesh,
    augmentation=augmentation(config),
    coarse_codec=net.coarse_codec,
    fine_codec=net.fine_codec,
    window_jitter=float(config.augment.window_jitter) * net.coarse_codec.stride,
    donate=donate,
  )


def abstract_params(config: ml_collections.ConfigDict, mesh):
  """`train_step.abstract_params` of the config's model: the tree a checkpoint's
  parameters restore into for serving and evaluation (no optimizer built)."""
  return step_lib.abstract_params(model(config), tuple(config.input_hw), mesh)


def abstract_state(config: ml_collections.ConfigDict, mesh):
  """`train_step.abstract_state` of the config's model and optimizers (nothing compiled)."""
  return step_lib.abstract_state(model(config), phases(config), tuple(config.input_hw), mesh)


# --- data ----------------------------------------------------------------------


def crop(config: ml_collections.ConfigDict, *, training: bool = False) -> input_pipeline.Crop:
  """How the config turns an example into a canvas (`input_pipeline.Crop`).

  Training labels get `config.label_noise` (fixed per example); evaluation
  scores against the clean joints where the dataset has them
  (`config.eval.clean_labels`).
  """
  c = input_pipeline.Crop(
    skeleton=skeleton(config),
    crop_mode=config.crop_mode,
    canvas_hw=tuple(config.input_hw),
    image_scale=config.image_scale or None,
    box_scale=config.box_scale or None,
    flic_protocol=protocol(config),
  )
  if training:
    return dataclasses.replace(
      c, label_noise=float(config.label_noise), noise_seed=int(config.seed)
    )
  return dataclasses.replace(c, clean_labels=bool(config.eval.clean_labels))


def dataset_source(config: ml_collections.ConfigDict, split: str):
  """The built split's dataset features (synthetic people are prepared on demand)."""
  return datasets.data_source(
    config.tfds_name, split, config_name=config.tfds_config, data_dir=config.data_dir
  )


def cached(
  config: ml_collections.ConfigDict, source, split: str, workdir: str, *, training: bool = False
):
  """`source`, or its canvas cache in `workdir/canvas_cache/split` with `config.canvas_cache`."""
  if not config.canvas_cache:
    return source
  kind = "train" if training else "eval"
  return canvas_cache.build_canvas_cache(
    source,
    path=os.path.join(workdir, "canvas_cache", f"{split}-{kind}"),
    crop=crop(config, training=training),
  )


def eval_examples(config: ml_collections.ConfigDict, split: str = ""):
  """The evaluation split's examples that are scored: its first
  `config.max_eval_examples` (0: all), at least one.

  Cheap (opens the split, reads nothing): training calls it before its first
  step, so a missing, unbuilt or empty evaluation split stops the run at once.

  Raises:
    FileNotFoundError: the dataset is not built (the message gives the command).
    ValueError: no such split, or it has no example to score (one line).
  """
  split = split or config.eval_split
  source = datasets.Limit(dataset_source(config, split), config.max_eval_examples)
  if not len(source):
    raise ValueError(
      f"config.eval_split={split!r}: no example to evaluate ({config.tfds_name} in "
      f"{datasets.default_data_dir(config.data_dir)})"
    )
  return source


def eval_source(config: ml_collections.ConfigDict, workdir: str, split: str = ""):
  """The evaluation split (its first `config.max_eval_examples`), cached if configured."""
  split = split or config.eval_split
  return cached(config, eval_examples(config, split), split, workdir)


def train_batches(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  start_batch: int = 0,
  source=None,
  seed_offset: int = 0,
):
  """The endless, shuffled stream of training batches (host-local rows).

  Args:
    config: the run's config.
    workdir: where a canvas cache goes.
    start_batch: skip this many global batches (resume).
    source: dataset features to use instead of the training split.
    seed_offset: added to `config.seed` (another stream over the same data).
  """
  if source is None:
    split = config.train_split
    source = cached(config, dataset_source(config, split), split, workdir, training=True)
  return input_pipeline.make_dataset(
    source,
    global_batch_size=config.batch_size,
    shuffle=True,
    seed=config.seed + seed_offset,
    num_epochs=None,
    worker_count=config.worker_count,
    start_batch=start_batch,
    crop=crop(config, training=True),
  )


def eval_batches(config: ml_collections.ConfigDict, source):
  """One pass over `source`, padded to whole batches (`_mask` marks real rows)."""
  return input_pipeline.make_dataset(
    source,
    global_batch_size=config.batch_size,
    shuffle=False,
    num_epochs=1,
    drop_remainder=False,
    worker_count=config.worker_count,
    crop=crop(config),
  )


# --- a run's own config --------------------------------------------------------


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (`WORKDIR/config.json`).

  Raises:
    FileNotFoundError: the workdir has no config.json (not a training run).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir is not a training run's directory")
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
  return saved_config(data)


def saved_config(data: dict) -> ml_collections.ConfigDict:
  """A config saved as JSON (config.json, a history entry) as a `ConfigDict`.

  Fields added since it was saved take their defaults; its phases are its own
  (a phase the defaults have and it lacks is not added), each completed with
  the defaults of `configs.common.phase`. A config saved before phases were
  data (`coarse_steps`, `learning_rate`, `lam`, ...) is converted
  (`_upgrade`), so older runs resume, evaluate and serve as they were trained.
  """
  from heatpose_jax.configs import common

  data = _upgrade(fileio.json_tuples(data))
  base = common.base_config()
  saved_phases = data.pop("phases", None)
  out = _merge(base, data)
  if saved_phases is not None:
    out.phases = ml_collections.ConfigDict(
      {n: _merge(common.phase(0, ("coarse",), (1.0, 0.0), 1.0), p) for n, p in saved_phases.items()}
    )
  return out


# The fields of a config saved before phases were data, and what they became.
_OLD_PHASE_FIELDS = (
  "coarse_steps",
  "fine_steps",
  "joint_steps",
  "learning_rate",
  "joint_learning_rate",
  "lam",
  "warmup_steps",
  "weight_decay",
  "grad_clip",
)


def _upgrade(data: dict) -> dict:
  """Converts a config saved with `coarse_steps` ... `lam` to `phase_order` + `phases`."""
  if "coarse_steps" not in data or "phases" in data:
    return data
  from heatpose_jax.configs import common

  old = {k: data[k] for k in _OLD_PHASE_FIELDS if k in data}
  rest = {k: v for k, v in data.items() if k not in _OLD_PHASE_FIELDS}
  lr, opt = (
    old.get("learning_rate", 1e-3),
    {k: old[k] for k in ("warmup_steps", "weight_decay", "grad_clip") if k in old},
  )
  phases = {
    "coarse": common.phase(old.get("coarse_steps", 0), ("coarse",), (1.0, 0.0), lr, **opt),
    "fine": common.phase(old.get("fine_steps", 0), ("fine",), (0.0, 1.0), lr, **opt),
    "joint": common.phase(
      old.get("joint_steps", 0),
      ("coarse", "fine"),
      (1.0, old.get("lam", 0.1)),
      old.get("joint_learning_rate", 2e-4),
      **opt,
    ),
  }
  return {**rest, "phase_order": ("coarse", "fine", "joint"), "phases": phases}


def _merge(base: ml_collections.ConfigDict, data: dict) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(base.to_dict())
  for k, v in data.items():
    if isinstance(v, dict | ml_collections.ConfigDict) and isinstance(
      out.get(k), ml_collections.ConfigDict
    ):
      out[k] = _merge(out[k], dict(v))
    else:
      out[k] = v
  return out
