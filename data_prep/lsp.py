"""Leeds Sports Pose (LSP) and LSP extended (LSPet) as a TFDS builder: `lsp`.

Manual dir (see `data_prep/manual_dirs.md`): `joints.mat` and `images/im%05d.jpg`
(LSPet) or `images/im%04d.jpg` (LSP), image `n` (1-based) ↔ column `n` of `joints`.

Which dataset it is comes from the image names (`im0001.jpg`: LSP, `im00001.jpg`:
LSPet), and each has one documented `joints` layout; a file in the other layout
is refused (one line naming the file and its shape), not read with the other
dataset's flag convention (an LSPet file saved transposed, 3×14×N, would have
every visibility flag inverted). Without either kind of image name the shape
decides (every image is then absent, and the build stops with an empty split).

Layouts:
  * LSPet, 14×3×N (x, y, flag): flag 1 = annotated and visible; flag 0 = not
    annotated, with one placeholder per image outside it. Checked on the real
    `lsp400` file: of its 734 flag-0 joints 430 sit at (0, −k), 303 at (−k, 0)
    and one at (0, 0); overlays show them mostly on occluded limbs (im00013's
    far-side arm) but also on a few visible ones (im00022's head), so flag 0
    means "no label", not "occluded".
  * LSP, 3×14×N: the flag is inverted (0 = visible; as CPM's `gen_lsp.m`
    `1 - joints(3,:,:)`); occluded joints keep real coordinates.
Frames: MATLAB 1-based pixels → 0-based with `- 1` (the placeholders at 0 lie just
outside the 1-based image). `joints_visible` = the flag says visible;
`joints_valid` = visible, or an occluded joint whose point lies inside the image
(x in [-0.5, w - 0.5], y likewise): a visible joint just outside the frame stays
annotated, a placeholder does not. Checks (`docs/data.md`): a visible joint more
than an image side outside the image is marked invalid; a NaN or infinite
annotated joint, or no annotated joint left, skips the image.

Splits by index (file order): `train` = the first `num_train` images, `test` the
rest, neither empty. Default `num_train`: 1000 when N = 2000 (LSP's own split),
else 75% (300 / 100 on the 400-image `lsp400`). `center`/`scale` from the
annotated joints' extent, `torso_size` ‖r_shoulder − l_hip‖, `torso_box` the
bounding box of the shoulders and hips (zeros unless all four are annotated), no
head box.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from data_prep import common
from heatpose_jax.data import joints as joints_lib

ANNOTATIONS = "joints.mat"
SKELETON = joints_lib.SKELETONS["lsp"]
NUM_JOINTS = len(SKELETON.annotated)
_TORSO = [SKELETON.annotated.index(n) for n in ("l_shoulder", "r_shoulder", "l_hip", "r_hip")]

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download LSP (lsp_dataset.zip) from http://sam.johnson.io/research/lsp.html or
LSPet (lspet_dataset.zip) from http://sam.johnson.io/research/lspet.html, unzip,
and pass the folder as the manual dir. It must hold `joints.mat` (14×3×N LSPet or
3×14×N LSP) and `images/` (im00001.jpg … for LSPet, im0001.jpg … for LSP).
"""


@dataclasses.dataclass
class LspConfig(tfds.core.BuilderConfig):
  """Which images form `train`: the first `num_train` (None: the default rule)."""

  num_train: int | None = None


def default_num_train(n: int) -> int:
  """LSP's 1000/1000 split for its 2000 images, else the first 75%."""
  return 1000 if n == 2000 else int(round(0.75 * n))


# Each dataset's documented `joints` layout and its image names (`dataset_of_images`).
LAYOUTS = {"lsp": "3×14×N", "lspet": "14×3×N"}
IMAGE_NAMES = {"lsp": "im0001.jpg", "lspet": "im00001.jpg"}
_IMAGE_NAME = re.compile(r"^im(\d{4,5})\.jpg$")


def dataset_of_images(images: Path) -> str | None:
  """`"lsp"` (images im0001.jpg …) or `"lspet"` (im00001.jpg …); None if neither.

  Raises:
    common.DataError: the folder mixes both namings (two datasets in one folder).
  """
  digits = set()
  if images.is_dir():
    with os.scandir(images) as entries:
      for e in entries:
        match = _IMAGE_NAME.match(e.name)
        if match:
          digits.add(len(match.group(1)))
  if len(digits) > 1:
    raise common.DataError(
      f"{images}: holds both LSP (im0001.jpg) and LSPet (im00001.jpg) image names; "
      "one dataset per manual dir"
    )
  return {4: "lsp", 5: "lspet"}.get(next(iter(digits), 0))


def read_joints(mat_path, dataset: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
  """Reads `joints.mat`.

  Args:
    mat_path: path of `joints.mat`.
    dataset: `"lsp"` or `"lspet"` (`dataset_of_images`): the file must have that
      dataset's documented layout (`LAYOUTS`); None: the shape decides.

  Returns:
    `(joints, visible, layout)`: float64 (N, 14, 2) (x, y) 0-based pixels (NaN
    only where the file has NaN), bool (N, 14) visibility from the flag, and
    `"lspet"` (14×3×N) or `"lsp"` (3×14×N).

  Raises:
    FileNotFoundError, common.DataError: a missing file, no 14×3×N / 3×14×N
    `joints`, or the layout of the other dataset than `dataset`.
  """
  mat_path = Path(mat_path)
  mat = common.load_mat(mat_path, "LSP", "joints")
  arr = np.asarray(mat["joints"], np.float64)
  if arr.ndim == 2:  # a single image: MATLAB drops the trailing singleton axis.
    arr = arr[..., None]
  if arr.ndim == 3 and arr.shape[:2] == (NUM_JOINTS, 3):
    layout, xyf = "lspet", arr.transpose(2, 0, 1)  # (N, 14, 3)
    visible = xyf[..., 2] == 1
  elif arr.ndim == 3 and arr.shape[:2] == (3, NUM_JOINTS):
    layout, xyf = "lsp", arr.transpose(2, 1, 0)
    visible = xyf[..., 2] == 0  # LSP's flag marks occlusion.
  else:
    raise common.DataError(
      f"{mat_path}: 'joints' has shape {arr.shape}; expected 14×3×N (LSPet) or 3×14×N (LSP)"
    )
  if dataset is not None and layout != dataset:
    name = {"lsp": "LSP", "lspet": "LSPet"}
    raise common.DataError(
      f"{mat_path}: 'joints' has shape {arr.shape} ({LAYOUTS[layout]}, {name[layout]}'s layout), "
      f"but the images ({IMAGE_NAMES[dataset]} …) are {name[dataset]}'s, whose joints.mat is "
      f"{LAYOUTS[dataset]}; refusing to guess the visibility flags: store 'joints' as "
      f"{LAYOUTS[dataset]}"
    )
  return xyf[..., :2] - 1.0, visible, layout


def image_path(images: Path, n: int, layout: str) -> Path:
  """The image of 0-based example `n`: im%05d.jpg (LSPet) or im%04d.jpg (LSP)."""
  names = [f"im{n + 1:05d}.jpg", f"im{n + 1:04d}.jpg"]
  if layout == "lsp":
    names.reverse()
  return next((images / m for m in names if (images / m).is_file()), images / names[0])


def valid_mask(joints: np.ndarray, visible: np.ndarray, hw) -> np.ndarray:
  """(14,) bool: visible, or an occluded point inside the (h, w) image (0-based)."""
  h, w = hw
  x, y = joints[:, 0], joints[:, 1]
  inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
  return visible | inside


def example(joints: np.ndarray, visible: np.ndarray, valid: np.ndarray) -> dict:
  """The annotation features of one image from its checked (14, 2) 0-based joints."""
  pts = np.where(valid[:, None], joints, 0.0).astype(np.float32)
  center, scale = common.extent_center_scale(pts, valid)
  torso = pts[_TORSO]
  box = np.concatenate([torso.min(0), torso.max(0)]) if valid[_TORSO].all() else np.zeros(4)
  return {
    "joints": pts,
    "joints_valid": valid,
    "joints_visible": visible & valid,
    "center": center,
    "scale": scale,
    "head_box": np.zeros(4, np.float32),
    "torso_box": box.astype(np.float32),
    "head_size": np.float32(0.0),
    "torso_size": common.torso_size(SKELETON, pts, valid),
  }


class Lsp(common.ArrayRecordBuilder):
  """LSP / LSPet: one person per image, 14 joints."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: 0-based joints, index split."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [LspConfig(name="default", description="Default split rule.")]

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
      self,
      description="LSP / LSPet images with 14 joints in 0-based pixels.",
      features=common.common_features(NUM_JOINTS),
      homepage="http://sam.johnson.io/research/lsp.html",
    )

  def _split_generators(self, dl_manager):
    root = common.manual_paths(dl_manager, "lsp", ANNOTATIONS, MANUAL_DOWNLOAD_INSTRUCTIONS)
    dataset = dataset_of_images(root / common.IMAGES)
    joints, visible, layout = read_joints(root / ANNOTATIONS, dataset)
    n = len(joints)
    num_train = self.builder_config.num_train
    num_train = default_num_train(n) if num_train is None else num_train
    if not 0 < num_train < n:
      raise common.DataError(
        f"lsp: config num_train={num_train} outside 1..{n - 1}: both splits need images"
        f" ({n} in {root / ANNOTATIONS})"
      )
    logging.info(
      "lsp: %s layout, %d images, train %d / test %d", layout, n, num_train, n - num_train
    )
    ids = np.arange(n)
    return {
      s: self._generate_examples(root, joints, visible, layout, idx, s)
      for s, idx in (("train", ids[:num_train]), ("test", ids[num_train:]))
    }

  def _generate_examples(self, root, joints, visible, layout, ids, split):
    skips = common.new_skip_counter(self, split)

    def candidates():
      for n in ids:
        path = image_path(root / common.IMAGES, int(n), layout)
        where = f"image {n + 1} ({path.name})"
        try:
          data, hw = common.read_image(path)
        except (FileNotFoundError, ValueError) as e:
          common.skip_image(skips, e, where)
          continue
        valid = valid_mask(joints[n], visible[n], hw)
        pts, valid, problem = common.clean_joints(SKELETON, joints[n], valid, hw, skips, where)
        if problem:
          skips.skip(problem, where)
          continue
        ex = {"image": data, "image_hw": hw, **example(pts, visible[n], valid)}
        yield where, ex, True

    return common.numbered(skips, candidates())
