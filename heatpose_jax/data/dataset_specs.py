"""One spec per dataset: what the library and the commands know about it, in one
frozen dataclass, registered in one visible dict (`SPECS`).

Everything that used to be a list of dataset names (the build command's
`--dataset`, `browse_dataset`, `evaluate_predictions`, the datasets prepared on
demand, the pooled table columns) reads the spec instead. A dataset added from
outside the library (a user's own module) calls `register(spec)`; a command
imports that module when told to (`--dataset_module=my.module`, or
`config.dataset_module` for training, evaluation and prediction), so the
registration happens in its own process. A spec can also travel with a built
dataset: a builder stores `to_json()` in the dataset's metadata
(`features.spec_metadata`), and `datasets.find_spec` registers a dataset that no
module names from that metadata (for datasets whose joints are only known at
build time, e.g. read from a COCO annotation file).

How to add a dataset: docs/design.md, "How to add a dataset".
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from typing import Any

from heatpose_jax.core import fileio
from heatpose_jax.data import coco_format
from heatpose_jax.data import joints as joints_lib

NORMALIZERS = ("head_size", "torso_size")  # PCKh, PCK
# Community prediction / ground-truth file formats (`prediction_io`), read by
# `experiments.evaluate_predictions` and written by `evaluate.evaluate_checkpoint`.
PREDICTION_FORMATS = ("mpii", "flic", "coco")
# The key of a built dataset's metadata.json that holds its spec (`to_json`).
METADATA_KEY = "dataset_spec"
# A training run's copy of its dataset's spec, in the layout of a build's metadata
# ({METADATA_KEY: to_json()}): `from_config.save_run_spec` / `use_run_spec`.
RUN_SPEC_FILE = "dataset_spec.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the project knows about one dataset.

  Attributes:
    skeleton: its joints: names in annotated and model order, flip pairs, the
      table's columns; `skeleton.name` is the dataset's name (`config.dataset`,
      `--dataset`).
    tfds_name: the TFDS builder's name; a build lands in
      `DATA_DIR/tfds_name/[CONFIG/]VERSION`.
    builder: the TFDS builder class, or `"module:attr"` naming it, imported only
      when a build needs it (so the library never imports `data_prep`).
    configs: the builder's config names (its `BUILDER_CONFIGS`); () without configs.
    default_config: the config built when none is named ("" without configs).
    manual: the builder reads source files from a manual dir (`--manual_dir`).
    generated: rendered from a seed, no files needed: `datasets.data_source`
      prepares a missing named config on demand.
    crop_mode: the crop of a config made from this spec
      (`input_pipeline.CROP_MODES`; `configs/registered.py`).
    box_scale: its person-box margin (0: the crop mode's default).
    eval_split: the split that is scored (MPII's test split has no labels).
    normalizer: 'head_size' (PCKh) or 'torso_size' (PCK): the dataset's metric.
    pools: the table's pooled columns, after the skeleton's plain-mean columns:
      (column, model joint names), each the count-weighted mean over its joints
      (correct / evaluated, MPII's `computePCK.m`); () for none (FLIC's table).
    prediction_format: the community file format (`PREDICTION_FORMATS`) that
      `evaluate_predictions` reads and `evaluate_checkpoint` writes for it; ''
      for none (`prediction_io.write_predictions`: (N, J, 2) 1-based `preds`).
    from_build: its joints are read from the source files when it is built (COCO
      format): the spec a build stored (`datasets.find_spec`) takes this one's place.
    box_aspect: width / height of the person boxes its builder fixes
      (`topdown.box_center_scale`); 0 where it has none (a `Predictor` box then
      takes the canvas's aspect).
  """

  skeleton: joints_lib.Skeleton
  tfds_name: str
  builder: str | Callable[..., Any]
  configs: tuple[str, ...] = ()
  default_config: str = ""
  manual: bool = False
  generated: bool = False
  crop_mode: str = "extent"
  box_scale: float = 0.0
  eval_split: str = "test"
  normalizer: str = "torso_size"
  pools: tuple[tuple[str, tuple[str, ...]], ...] = ()
  prediction_format: str = ""
  from_build: bool = False
  box_aspect: float = 0.0

  def __post_init__(self):
    where = f"dataset spec {self.name!r}"
    if self.normalizer not in NORMALIZERS:
      raise ValueError(f"{where}: normalizer {self.normalizer!r} is not one of {NORMALIZERS}")
    if self.prediction_format not in ("", *PREDICTION_FORMATS):
      raise ValueError(
        f"{where}: prediction_format {self.prediction_format!r} is not one of {PREDICTION_FORMATS}"
      )
    if (self.default_config or self.configs) and self.default_config not in self.configs:
      raise ValueError(f"{where}: default_config {self.default_config!r} not in {self.configs}")
    for column, names in self.pools:
      unknown = [n for n in names if n not in self.skeleton.model_joints]
      if unknown or not names:
        raise ValueError(f"{where}: pool {column!r} names no model joints or unknown {unknown}")
    if isinstance(self.builder, str) and ":" not in self.builder:
      raise ValueError(f"{where}: builder {self.builder!r} is not 'module:attr'")

  @property
  def name(self) -> str:
    return self.skeleton.name

  def builder_class(self):
    """The TFDS builder class (imports its module if `builder` names it)."""
    if not isinstance(self.builder, str):
      return self.builder
    module, _, attr = self.builder.partition(":")
    return getattr(importlib.import_module(module), attr)

  def to_json(self) -> dict:
    """The spec as JSON-ready data (a builder class as `"module:attr"`), for `from_json`."""
    out = dataclasses.asdict(self)
    if not isinstance(self.builder, str):
      out["builder"] = f"{self.builder.__module__}:{self.builder.__qualname__}"
    return out

  @classmethod
  def from_json(cls, data: dict) -> DatasetSpec:
    """The spec `to_json` wrote (JSON lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: fileio.json_tuples(v) for k, v in data.items() if k in fields}
    skel = {k: fileio.json_tuples(v) for k, v in data["skeleton"].items()}
    kwargs["skeleton"] = joints_lib.Skeleton(**skel)
    return cls(**kwargs)


_SKELETONS = joints_lib.SKELETONS


def _downloaded(name: str, builder_class: str, **fields) -> DatasetSpec:
  """A dataset of photographs the user downloads (`manual`): TFDS name, skeleton
  (`joints.SKELETONS`) and builder module (`data_prep.NAME`) all called `name`."""
  return DatasetSpec(
    skeleton=_SKELETONS[name],
    tfds_name=name,
    builder=f"data_prep.{name}:{builder_class}",
    manual=True,
    **fields,
  )


# The FLIC table has no pooled columns (the paper's Fig. 14 columns only).
FLIC = _downloaded(
  "flic", "Flic", crop_mode="torso", normalizer="torso_size", prediction_format="flic"
)
MPII = _downloaded(
  "mpii",
  "Mpii",
  crop_mode="scale_normalized",
  eval_split="validation",
  normalizer="head_size",
  pools=joints_lib.body_pools(_SKELETONS["mpii"]),
  prediction_format="mpii",
)
LSP = _downloaded(
  "lsp",
  "Lsp",
  configs=("default",),
  default_config="default",
  normalizer="torso_size",
  pools=joints_lib.body_pools(_SKELETONS["lsp"]),
)
SYNTHETIC = DatasetSpec(
  skeleton=_SKELETONS["synthetic"],
  tfds_name="synthetic",
  builder="heatpose_jax.data.synthetic_dataset:Synthetic",
  configs=("default", "tiny", "small", "distractor", "noisy"),
  default_config="default",
  generated=True,
  normalizer="head_size",
  pools=joints_lib.body_pools(_SKELETONS["synthetic"]),
)


def coco_spec(skeleton: joints_lib.Skeleton, box_aspect: float) -> DatasetSpec:
  """The spec of a COCO-format keypoint build (`data_prep/coco_keypoints.py`), whose
  skeleton comes from its annotation file: person boxes of aspect `box_aspect`
  cropped with a 1.25 margin ('box'), PCK by the torso beside OKS AP (docs/coco.md)."""
  return DatasetSpec(
    skeleton=skeleton,
    tfds_name="coco_keypoints",
    builder="data_prep.coco_keypoints:CocoKeypoints",
    configs=("coco", "crowdpose", "generic"),
    default_config="coco",
    crop_mode="box",
    box_scale=1.25,
    eval_split="validation",
    normalizer="torso_size",
    pools=coco_format.pools(skeleton),
    prediction_format="coco",
    from_build=True,
    box_aspect=box_aspect,
  )


# COCO 2017's 17 joints until a build says otherwise (every COCO-format build, of
# any config, is the dataset `coco`; its stored spec carries its file's joints).
COCO = coco_spec(
  coco_format.make_skeleton(
    coco_format.COCO_KEYPOINTS,
    coco_format.COCO_SKELETON,
    coco_format.derive_flip_pairs(coco_format.COCO_KEYPOINTS, "COCO_KEYPOINTS"),
  ),
  box_aspect=0.75,
)

# name -> spec: one line per dataset of the library; others call `register`.
SPECS: dict[str, DatasetSpec] = {
  "flic": FLIC,
  "mpii": MPII,
  "lsp": LSP,
  "synthetic": SYNTHETIC,
  "coco": COCO,
}


def write_spec_file(path: str, spec: DatasetSpec) -> None:
  """Stores `spec` as a build's metadata holds it: {METADATA_KEY: spec.to_json()}."""
  fileio.write_json(path, {METADATA_KEY: spec.to_json()})


def read_spec_file(path: str) -> DatasetSpec | None:
  """The spec `write_spec_file` (or a build's metadata.json) stored; None where the
  file or its key is absent.

  Raises:
    ValueError: not JSON, or not a spec (one line naming the file).
  """
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      data = json.load(f)
    data = data.get(METADATA_KEY) if isinstance(data, dict) else None
    return None if data is None else DatasetSpec.from_json(data)
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    raise ValueError(f"{path}: not a dataset spec ({type(e).__name__}: {e})") from None


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
  """Adds `spec` to `SPECS` under `spec.name` and returns it.

  Registering an equal spec again is a no-op (a module imported twice); another
  spec under a registered name is refused unless `replace`.

  Raises:
    ValueError: the name is taken by a different spec.
  """
  old = SPECS.get(spec.name)
  if old is not None and old != spec and not replace:
    raise ValueError(f"dataset {spec.name!r} is registered already (pass replace=True)")
  SPECS[spec.name] = spec
  return spec


def get(name: str) -> DatasetSpec:
  """The registered spec of `name`, with an error that lists the known names."""
  if name not in SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(SPECS)}")
  return SPECS[name]


def for_tfds_name(tfds_name: str) -> DatasetSpec | None:
  """The registered spec whose builder writes `DATA_DIR/tfds_name/`, or None."""
  return next((s for s in SPECS.values() if s.tfds_name == tfds_name), None)


def import_modules(modules: str, what: str = "--dataset_module") -> None:
  """Imports each module of the comma-separated `modules` (they call `register`).

  Raises:
    ValueError: one line naming `what` (the flag or config field) and the module.
  """
  for module in filter(None, (m.strip() for m in (modules or "").split(","))):
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f"{what}={module}: cannot import it ({e})") from None
