"""Synthetic people (`heatpose_jax.data.synthetic`) as a TFDS builder: `synthetic`.

It lives in the library, not in `data_prep`, because training prepares it on demand.

No manual dir: every example is rendered from `(config.seed, split, index)`, so a
build is reproducible and an example does not depend on the others. Configs:

| config | size | train / test | distractor | label noise σ |
|---|---|---|---|---|
| `default` | 256×256 | 4000 / 500 | no | 0 |
| `tiny` | 64×64 | 128 / 64 | no | 0 |
| `distractor` | 256×256 | 4000 / 500 | every image | 0 |
| `noisy` | 256×256 | 4000 / 500 | no | 1.5 px |

`default` and `noisy` share their seed and sizes, so they hold the same images and
clean joints; only `joints` differ (the label noise is drawn last). `distractor`
puts a second, complete person in every image; the target is the one whose
`torso_box` is stored (the MRF study's observed torso).

Features: the common ones of `docs/design.md`, plus `joints_clean` (14, 2) (the
true joints, 0 where not valid), `distractor_joints` (14, 2) (the distractor's
true joints, which may lie outside the image; zeros without one) and
`has_distractor`. `joints` = `joints_clean` + N(0, σ²) on valid joints, 0
elsewhere. `joints_valid`: the true joint lies inside the image; `joints_visible`:
valid and not hidden by an occluder, the distractor or the person's own parts
(self-occlusion, since 1.1.0). `center`/`scale` come from
the clean joints' extent, `torso_size` from the clean joints, `head_box` and
`torso_box` from the true geometry (not clipped to the image).

Images are stored as JPEG quality 95 (4:2:0): about 4x smaller than PNG for these
noisy renders and faster to decode with PIL, and JPEG artefacts are what the real
datasets have; the labels do not depend on them.

Any config can be varied without editing this file: `python -m data_prep.build
--dataset=synthetic --config=tiny --num_train=1000 --seed=3` builds a custom config
named `tiny-num_train1000-seed3` (see `custom_config`). The named configs need no
files, so `datasets.data_source` prepares them on demand (`prepare`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from heatpose_jax.data import features
from heatpose_jax.data import joints as joints_lib
from heatpose_jax.data import synthetic as render

SKELETON = render.SKELETON
NUM_JOINTS = render.NUM_JOINTS
JPEG_QUALITY = 95


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """What to render.

  Attributes:
    num_train, num_test: examples per split.
    height, width: image size in pixels.
    distractor_prob: probability that an image holds a second person.
    label_noise: std in pixels of the Gaussian noise added to the stored joints.
    occluders: whether random shapes may cover the target's joints.
    person_height: (lo, hi) range of the target's standing height / image height.
    seed: the base seed; example i of split s is rendered from (seed, s, i).
  """

  num_train: int = 4000
  num_test: int = 500
  height: int = 256
  width: int = 256
  distractor_prob: float = 0.0
  label_noise: float = 0.0
  occluders: bool = True
  person_height: tuple[float, float] = (0.6, 0.9)
  seed: int = 0


def _cpu_config(name: str, num_train: int, num_test: int, use: str) -> SyntheticConfig:
  """A 64×64 config for the CPU (tests, the quick start)."""
  return SyntheticConfig(
    name=name,
    description=f"64x64, {num_train}/{num_test}: {use}.",
    num_train=num_train,
    num_test=num_test,
    height=64,
    width=64,
  )


BUILDER_CONFIGS = [
  SyntheticConfig(name="default", description="256x256, 4000/500, one person per image."),
  _cpu_config("tiny", 128, 64, "builds in seconds (tests, quick start)"),
  _cpu_config("small", 3000, 300, "the quick start's CPU training set (about 20 s to build)"),
  SyntheticConfig(
    name="distractor",
    description="256x256, 4000/500, a second person in every image (MRF study).",
    distractor_prob=1.0,
  ),
  SyntheticConfig(
    name="noisy",
    description="default's images with Gaussian label noise, sigma = 1.5 px.",
    label_noise=1.5,
  ),
]
CONFIGS = {c.name: c for c in BUILDER_CONFIGS}
DEFAULT_CONFIG = "default"


def custom_config(base: str, **overrides) -> SyntheticConfig:
  """`derive_config(CONFIGS[base], **overrides)`; ValueError for an unknown base."""
  if base not in CONFIGS:
    raise ValueError(f"unknown synthetic config {base!r}; known: {sorted(CONFIGS)}")
  return features.derive_config(CONFIGS[base], **overrides)


def check_config(cfg: SyntheticConfig) -> None:
  """Raises ValueError naming the first bad field of `cfg`."""
  checks = {
    "num_train": cfg.num_train >= 0,
    "num_test": cfg.num_test >= 0,
    "height": cfg.height >= 16,
    "width": cfg.width >= 16,
    "distractor_prob": 0.0 <= cfg.distractor_prob <= 1.0,
    "label_noise": cfg.label_noise >= 0.0,
    "person_height": len(cfg.person_height) == 2
    and 0 < cfg.person_height[0] <= cfg.person_height[1],
  }
  for field, ok in checks.items():
    if not ok:
      raise ValueError(f"synthetic config {cfg.name!r}: bad {field} = {getattr(cfg, field)!r}")


def make_example(cfg: SyntheticConfig, split: str, index: int) -> dict:
  """The feature dict of example `index` of `split` ("train" or "test")."""
  rng = render.example_rng(cfg.seed, split, index)
  # Always drawn, so that configs differing only in this probability (0 vs 1)
  # otherwise consume the same random stream.
  has_distractor = rng.random() < cfg.distractor_prob
  ex = render.render_example(
    rng,
    cfg.height,
    cfg.width,
    distractor=bool(has_distractor),
    label_noise=cfg.label_noise,
    occluders=cfg.occluders,
    person_height=tuple(cfg.person_height),
  )
  valid, clean = ex["joints_valid"], ex["joints_clean"]
  center, scale = features.extent_center_scale(clean, valid)
  return {
    "image": render.encode_jpeg(ex["image"], JPEG_QUALITY),
    "image_hw": np.array(ex["image"].shape[:2], np.int32),
    "index": np.int64(index),
    "joints": ex["joints"],
    "joints_valid": valid,
    "joints_visible": ex["joints_visible"],
    "center": center,
    "scale": scale,
    "head_box": ex["head_box"],
    "torso_box": ex["torso_box"],
    "head_size": np.float32(joints_lib.head_size_from_boxes(ex["head_box"][None])[0]),
    "torso_size": np.float32(joints_lib.torso_size(clean[None], valid[None], SKELETON)[0]),
    "joints_clean": clean,
    "distractor_joints": ex["distractor_joints"],
    "has_distractor": ex["has_distractor"],
  }


class Synthetic(features.ArrayRecordBuilder):
  """Procedurally rendered people with 14 MPII-ordered joints."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "joints_visible also marks self-occlusion (same images and joints).",
  }
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG

  def _info(self) -> tfds.core.DatasetInfo:
    t = tfds.features.Tensor
    return features.dataset_info(
      self,
      description=(
        "Synthetic articulated people on cluttered backgrounds, 14 joints in MPII "
        "order without pelvis and thorax, (x, y) 0-based pixels."
      ),
      features=features.common_features(
        NUM_JOINTS,
        joints_clean=t(shape=(NUM_JOINTS, 2), dtype=np.float32),
        distractor_joints=t(shape=(NUM_JOINTS, 2), dtype=np.float32),
        has_distractor=t(shape=(), dtype=np.bool_),
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download or read.
    cfg = self.builder_config
    check_config(cfg)
    return {
      "train": self._generate_examples("train", cfg.num_train),
      "test": self._generate_examples("test", cfg.num_test),
    }

  def _generate_examples(self, split: str, num: int):
    cfg = self.builder_config
    for index in range(num):
      yield index, make_example(cfg, split, index)


def prepare(config_name: str, data_dir: str, **overrides) -> Synthetic:
  """Builds config `config_name` (with `overrides`, see `custom_config`) into `data_dir`."""
  import tensorflow_datasets as tfds

  builder = Synthetic(data_dir=data_dir, config=custom_config(config_name, **overrides))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
