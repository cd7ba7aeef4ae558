"""Small fake FLIC, MPII and LSP manual dirs in the exact official layouts.

Each `write_fake_*` writes the annotation file with `scipy.io.savemat` (MATLAB
1-based pixel coordinates, as the real files) plus small JPEGs made with PIL, and
returns what a test needs to know what the builder should produce. Bad rows are
written on purpose: bad image files (`IMAGE_BAD`: absent, garbage bytes, a JPEG cut
short, a text file, a 16-bit PNG, a decompression bomb) and bad annotations (NaN,
infinite or far-off coordinates, upside-down boxes, bad scales); only the values
are bad, the layouts stay the official ones.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio
import tensorflow_datasets as tfds
from PIL import Image

from heatpose_jax.data import joints as joints_lib

EMPTY = np.zeros((0, 0))  # MATLAB's []


def write_jpeg(path: Path, hw: tuple[int, int], seed: int = 0) -> None:
  """A small random RGB JPEG of height, width `hw`."""
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG")
  path.write_bytes(buf.getvalue())


def write_garbage(path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"\xff\xd8 this is not a JPEG " * 8)


# Bad image files, by kind (the file keeps the dataset's `.jpg` name).
IMAGE_BAD = (
  "missing_image", "garbage_image", "truncated_image", "text_image", "png16_image", "bomb_image",
)  # fmt: skip
# The side of `bomb_image`: BOMB_SIDE² pixels, over twice PIL's MAX_IMAGE_PIXELS (89.5M).
BOMB_SIDE = 100_000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
  """A PNG of a few bytes whose header claims side × side 1-bit pixels (a decompression bomb)."""
  ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
  idat = zlib.compress(b"\0" * (side // 8 + 1))  # the first row only
  return (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", ihdr)
    + _png_chunk(b"IDAT", idat)
    + _png_chunk(b"IEND", b"")
  )


def write_image(path: Path, hw: tuple[int, int], seed: int = 0, kind: str | None = None) -> None:
  """A good JPEG (`kind` None or not in `IMAGE_BAD`), or the bad file `kind` names."""
  if kind == "missing_image":
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  if kind == "garbage_image":
    write_garbage(path)
  elif kind == "truncated_image":
    write_jpeg(path, hw, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
  elif kind == "text_image":
    path.write_text("This is a text file, not an image.\n")
  elif kind == "png16_image":  # a 16-bit greyscale PNG, mostly above 255
    pixels = np.random.default_rng(seed).integers(1000, 65535, hw, dtype=np.uint16)
    Image.fromarray(pixels).save(path, format="PNG")
  elif kind == "bomb_image":
    path.write_bytes(bomb_png())
  else:
    write_jpeg(path, hw, seed)


def struct_array(records: list[dict], fields: list[str]) -> np.ndarray:
  """A 1×k MATLAB struct array; fields a record lacks hold []."""
  arr = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
  for i, rec in enumerate(records):
    for f in fields:
      arr[0, i][f] = rec.get(f, EMPTY)
  return arr


# --- FLIC ------------------------------------------------------------------

FLIC_BAD_ROWS = ("missing_image", "all_nan", "garbage_image", "half_nan")
# More bad rows: every image kind, and bad annotation values. `far_joints` (l_shoulder
# at x = -1000, r_wrist at y = 1e9) is kept with those two joints invalid; the
# others are skipped.
FLIC_MORE_BAD = (
  *IMAGE_BAD, "inf_joint", "far_joints", "all_far", "flipped_torsobox", "flat_torsobox",
  "far_torsobox",
)  # fmt: skip
FLIC_KEPT = ("far_joints",)


def write_fake_flic(
  root,
  n_train: int = 3,
  n_test: int = 2,
  bad_rows=("missing_image", "all_nan", "garbage_image"),
  hw: tuple[int, int] = (48, 72),
  seed: int = 0,
) -> list[dict]:
  """Writes `root/examples.mat` and `root/images/*.jpg`.

  Good rows alternate train/test (train first); each bad row (a train row, kind
  from `FLIC_BAD_ROWS` or `FLIC_MORE_BAD`) is inserted after the first good row.
  The first good train row has its left hip missing (NaN).

  Returns:
    One dict per row in file order: `split` ('train'/'test'), `bad` (None or its
    kind), `skipped` (whether the builder must skip it), `coords` (2, 29) 1-based
    with NaN, `torsobox` (4,) 1-based, `filepath`, `moviename`, `currframe`, `hw`.
  """
  root = Path(root)
  rng = np.random.default_rng(seed)
  h, w = hw
  cols = list(joints_lib.FLIC_COORD_COLUMNS)

  def row(split, k, bad=None):
    coords = np.full((2, 29), np.nan)
    coords[0, cols] = rng.uniform(1, w, len(cols)).round(3)
    coords[1, cols] = rng.uniform(1, h, len(cols)).round(3)
    if bad == "all_nan":
      coords[:] = np.nan
    elif bad == "half_nan":
      coords[0, cols[2]] = np.nan
    elif bad == "inf_joint":
      coords[1, cols[4]] = np.inf
    elif bad == "far_joints":
      coords[0, cols[0]], coords[1, cols[5]] = -1000.0, 1e9
    elif bad == "all_far":
      coords[0, cols] = -1000.0
    x1, y1 = rng.uniform(1, w / 2), rng.uniform(1, h / 2)
    box = np.array([x1, y1, x1 + w / 3, y1 + h / 3], np.float32)
    if bad == "flipped_torsobox":  # upside down: y2 < y1
      box = box[[0, 3, 2, 1]]
    elif bad == "flat_torsobox":
      box[3] = box[1]
    elif bad == "far_torsobox":
      box[[0, 2]] += 10 * w
    frame = 100 + k
    return {
      "split": split,
      "bad": bad,
      "skipped": bad is not None and bad not in FLIC_KEPT,
      "coords": coords,
      "torsobox": box,
      "filepath": f"fake-movie-{frame:08d}.jpg",
      "moviename": "fake-movie",
      "currframe": frame,
      "hw": hw,
    }

  good, n_tr, n_te = [], n_train, n_test
  while n_tr or n_te:
    if n_tr and (len(good) % 2 == 0 or not n_te):
      good.append("train")
      n_tr -= 1
    else:
      good.append("test")
      n_te -= 1
  rows = [row(s, k) for k, s in enumerate(good)]
  for b, bad in enumerate(bad_rows):
    if bad not in FLIC_BAD_ROWS + FLIC_MORE_BAD:
      raise ValueError(f"unknown bad row kind {bad!r}; known: {FLIC_BAD_ROWS + FLIC_MORE_BAD}")
    rows.insert(1 + b, row("train", len(good) + b, bad))
  first_train = next((r for r in rows if r["split"] == "train" and r["bad"] is None), None)
  if first_train is not None:
    first_train["coords"][:, 6] = np.nan  # l_hip missing: torso_size 0

  recs = []
  for k, r in enumerate(rows):
    recs.append(
      {
        "poselet_hit_idx": np.arange(1, 4, dtype=np.uint16) + k,
        "moviename": r["moviename"],
        "coords": r["coords"],
        "filepath": r["filepath"],
        "imgdims": np.array([h, w, 3], np.uint16),
        "currframe": float(r["currframe"]),
        "torsobox": r["torsobox"],
        "istrain": float(r["split"] == "train"),
        "istest": float(r["split"] == "test"),
      }
    )
    write_image(root / "images" / r["filepath"], hw, seed=k, kind=r["bad"])
  fields = list(recs[0])
  root.mkdir(parents=True, exist_ok=True)
  (root / "images").mkdir(exist_ok=True)
  sio.savemat(root / "examples.mat", {"examples": struct_array(recs, fields)})
  return rows


# --- MPII ------------------------------------------------------------------

MPII_HEAD_FIELDS = ["x1", "y1", "x2", "y2"]
# `write_fake_mpii(extra_bad=...)` kinds: bad image files, and bad person values.
# `far_joints` (r_ankle at x = -1000, head top at y = 1e9) is kept with those two
# joints invalid; the others are skipped. `test_*` are test-image rectangles.
MPII_MORE_BAD = (
  *IMAGE_BAD[1:], "far_joints", "inf_joint", "zero_scale", "negative_scale", "flipped_head",
  "far_objpos", "test_negative_scale",
)  # fmt: skip


def _points(rng, hw, ids, vis=None):
  """Point records (1-based x, y) for joint `ids`; `vis` overrides is_visible."""
  h, w = hw
  recs = []
  for n, j in enumerate(ids):
    v = 1 if vis is None else vis[n]
    recs.append(
      {
        "x": float(rng.integers(1, w)),
        "y": float(rng.integers(1, h)),
        "id": j,
        "is_visible": v,
      }
    )
  return recs


def write_fake_mpii(
  root,
  split_file: str | None = None,
  validation=((0, 1), (9, 0)),
  n_extra: int = 6,
  hw: tuple[int, int] = (60, 80),
  seed: int = 0,
  h5_one_based: bool = False,
  extra_bad: tuple[str, ...] = (),
) -> dict:
  """Writes `root/mpii_human_pose_v1_u12_1.mat`, `root/images/` and a split file.

  Images (0-based annolist index), with MPII's ragged cases:
    0 train: 2 persons; person 0 has string is_visible ('1', '0') and an empty
      one; person 1 has 10 of 16 points.
    1 train: one person (scipy collapses the annorect struct).
    2 train: person 0 without annopoints (not an example), person 1 with a single
      point (the point struct collapses), person 2 with a NaN coordinate (bad).
    3 train: its image file is missing (bad).
    4 train: its image is garbage bytes (bad).
    5 test: 2 rectangles with objpos/scale only; the second's objpos is [].
    6 test: one rectangle (collapsed).
    7 train: no annorect at all.
    8 train: annorect with only scale/objpos fields (no annopoints field).
    9 … 8 + n_extra train: one fully annotated person each.
    then one image per kind of `extra_bad` (`MPII_MORE_BAD`), one person each.

  Args:
    split_file: None, "h5" (hourglass `valid.h5`) or "json" (HRNet `valid.json`).
    validation: (image_index, person_index) 0-based keys of the split file.
    h5_one_based: write `index` 1-based (a wrong file, to test the check).

  Returns:
    dict with `persons` (every rectangle: image_index, person_index, image_name,
    kind in {'ok', 'no_annopoints', 'nan', 'missing_image', 'garbage_image',
    'test', 'test_no_objpos', 'no_fields', *extra_bad}, points (list of records), objpos
    (x, y) 1-based or None, scale, head (x1, y1, x2, y2) 1-based or None, activity),
    `names`, `img_train`, `validation` (the keys), `hw`.
  """
  root = Path(root)
  rng = np.random.default_rng(seed)
  h, w = hw
  all_ids = list(range(16))
  persons = []

  def person(i, r, kind, points=None, head=True, objpos=True):
    op = {"x": float(rng.integers(10, w - 10)), "y": float(rng.integers(10, h - 10))}
    scale = float(rng.uniform(0.5, 2.0))
    head_box = (5.0, 6.0, 25.0, 30.0)
    if kind == "far_objpos":
      op["x"] = 5.0 * w
    elif kind in ("zero_scale", "negative_scale", "test_negative_scale"):
      scale = 0.0 if kind == "zero_scale" else -scale
    elif kind == "flipped_head":
      head_box = (25.0, 30.0, 5.0, 6.0)
    p = {
      "image_index": i,
      "person_index": r,
      "kind": kind,
      "points": points,
      "objpos": (op["x"], op["y"]) if objpos else None,
      "scale": scale,
      "head": head_box if head else None,
    }
    persons.append(p)
    rec = {"scale": p["scale"], "objpos": op if objpos else EMPTY}
    if head:
      rec.update(dict(zip(MPII_HEAD_FIELDS, p["head"], strict=True)))
    if points is not None:
      rec["annopoints"] = {"point": struct_array(points, ["x", "y", "id", "is_visible"])}
    return rec

  train_fields = [*MPII_HEAD_FIELDS, "annopoints", "scale", "objpos"]
  images = []  # (annorect value, img_train, image kind)
  # 0: string and empty is_visible.
  vis0 = [1] * 16
  vis0[0], vis0[1], vis0[2] = "1", "0", EMPTY
  r00 = person(0, 0, "ok", _points(rng, hw, all_ids, vis0))
  r01 = person(0, 1, "ok", _points(rng, hw, [0, 1, 2, 3, 8, 9, 12, 13, 14, 15], [0, 1] * 5))
  images.append((struct_array([r00, r01], train_fields), 1, "ok"))
  # 1: one person -> collapsed annorect.
  images.append(
    (struct_array([person(1, 0, "ok", _points(rng, hw, all_ids))], train_fields), 1, "ok")
  )
  # 2: no annopoints, single point, NaN.
  r20 = person(2, 0, "no_annopoints", None, head=False)
  r21 = person(2, 1, "ok", _points(rng, hw, [9]))
  nan_pts = _points(rng, hw, all_ids)
  nan_pts[5]["y"] = np.nan
  r22 = person(2, 2, "nan", nan_pts)
  images.append((struct_array([r20, r21, r22], train_fields), 1, "ok"))
  images.append((struct_array([person(3, 0, "missing_image", _points(rng, hw, all_ids))], train_fields), 1, "missing_image"))  # fmt: skip
  images.append((struct_array([person(4, 0, "garbage_image", _points(rng, hw, all_ids))], train_fields), 1, "garbage_image"))  # fmt: skip
  # 5, 6: test rectangles (objpos/scale only).
  t50 = person(5, 0, "test", head=False)
  t51 = person(5, 1, "test_no_objpos", head=False, objpos=False)
  images.append((struct_array([t50, t51], ["scale", "objpos"]), 0, "ok"))
  images.append((struct_array([person(6, 0, "test", head=False)], ["scale", "objpos"]), 0, "ok"))
  images.append((EMPTY, 1, "ok"))  # 7: no annorect
  images.append((struct_array([person(8, 0, "no_fields", head=False)], ["scale", "objpos"]), 1, "ok"))  # fmt: skip
  for k in range(n_extra):
    rec = person(9 + k, 0, "ok", _points(rng, hw, all_ids))
    images.append((struct_array([rec], train_fields), 1, "ok"))
  for kind in extra_bad:
    if kind not in MPII_MORE_BAD:
      raise ValueError(f"unknown extra_bad kind {kind!r}; known: {MPII_MORE_BAD}")
    i = len(images)
    if kind.startswith("test_"):
      rec = person(i, 0, kind, head=False)
      images.append((struct_array([rec], ["scale", "objpos"]), 0, "ok"))
      continue
    pts = _points(rng, hw, all_ids)
    if kind == "far_joints":  # r_ankle at x = -1000, head top at y = 1e9
      pts[0]["x"], pts[9]["y"] = -1000.0, 1e9
    elif kind == "inf_joint":
      pts[3]["x"] = np.inf
    rec = person(i, 0, kind, pts)
    images.append((struct_array([rec], train_fields), 1, kind if kind in IMAGE_BAD else "ok"))

  names = [f"{100000000 + i:09d}.jpg" for i in range(len(images))]
  for p in persons:
    p["image_name"] = names[p["image_index"]]
  annolist, acts = [], []
  for i, (annorect, _, kind) in enumerate(images):
    annolist.append({"image": {"name": names[i]}, "annorect": annorect, "frame_sec": EMPTY, "vididx": EMPTY})  # fmt: skip
    # Activities: a name, an empty [] and an empty '' (both occur in the real file).
    act_name = ["curling", EMPTY, ""][i % 3]
    acts.append({"cat_name": "sports" if i % 3 == 0 else EMPTY, "act_name": act_name, "act_id": 7 if i % 3 == 0 else -1})  # fmt: skip
    for p in persons:
      if p["image_index"] == i:
        p["activity"] = "curling" if i % 3 == 0 else ""
    write_image(root / "images" / names[i], hw, seed=i, kind=kind)
  act = np.empty((len(acts), 1), dtype=[(f, object) for f in ("cat_name", "act_name", "act_id")])
  for i, a in enumerate(acts):
    for f, v in a.items():
      act[i, 0][f] = v
  img_train = np.array([[float(t) for _, t, _ in images]])
  release = {
    "annolist": struct_array(annolist, ["image", "annorect", "frame_sec", "vididx"]),
    "img_train": img_train,
    "version": "12",
    "single_person": np.empty((len(images), 1), dtype=object),
    "act": act,
    "video_list": np.array([["dummy"]], dtype=object),
  }
  for i in range(len(images)):
    release["single_person"][i, 0] = EMPTY
  root.mkdir(parents=True, exist_ok=True)
  sio.savemat(root / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": release})

  by_key = {(p["image_index"], p["person_index"]): p for p in persons}
  if split_file == "h5":
    # As pose-hg-train's valid.h5: float index/person (0-based), |S13 imgname, and
    # its crop centre/scale (objpos y + 15·scale, scale × 1.25).
    with h5py.File(root / "valid.h5", "w") as f:
      index = np.array([i for i, _ in validation], np.float64)
      f["index"] = index + 1 if h5_one_based else index
      f["person"] = np.array([r for _, r in validation], np.float64)
      f["imgname"] = np.array([names[i].encode() for i, _ in validation])
      scale = np.array([by_key[k]["scale"] for k in validation])
      center = np.array([by_key[k]["objpos"] for k in validation])
      f["center"] = center + np.stack([0 * scale, 15 * scale], axis=1)
      f["scale"] = 1.25 * scale
  elif split_file == "json":
    entries = []
    for k in validation:
      p = by_key[k]
      pts = np.zeros((16, 2))
      vis = np.zeros(16)
      for q in p["points"]:
        pts[q["id"]] = q["x"], q["y"]
        vis[q["id"]] = 1
      # HRNet rounds nothing: centre = objpos, here off by 0.5 px to test the tolerance.
      entries.append(
        {
          "image": names[k[0]],
          "center": [p["objpos"][0] + 0.5, p["objpos"][1]],
          "scale": p["scale"],
          "joints": pts.tolist(),
          "joints_vis": vis.tolist(),
        }
      )
    (root / "valid.json").write_text(json.dumps(entries))
  elif split_file is not None:
    raise ValueError(f"split_file must be None, 'h5' or 'json', not {split_file!r}")
  return {
    "persons": persons,
    "names": names,
    "img_train": img_train.ravel(),
    "validation": list(validation) if split_file else [],
    "hw": hw,
  }


# --- LSP -------------------------------------------------------------------

LSP_BAD = ("missing_image", "garbage_image", "nan")
# More kinds for `write_fake_lsp(bad=...)`: every image kind, an infinite joint, and
# visible joints far outside the image: `far_joints` (r_ankle at x = -1000, r_knee at
# y = 1e9; kept with those two invalid) and `all_far` (every joint; skipped).
LSP_MORE_BAD = (*IMAGE_BAD, "inf", "far_joints", "all_far")


def write_fake_lsp(
  root,
  n: int = 8,
  layout: str = "lspet",
  bad: dict[int, str] | None = None,
  hw: tuple[int, int] = (64, 48),
  seed: int = 0,
) -> dict:
  """Writes `root/joints.mat` and `root/images/im%05d.jpg` (LSPet) or im%04d.jpg (LSP).

  LSPet (14×3×N): flag 1 = visible; occluded joints (2 per image, joints 6 and 7
  in odd images) hold a placeholder (0, -k) outside the image and flag 0.
  LSP (3×14×N): flag 0 = visible, 1 = occluded with real coordinates.
  Image `n` (0-based) has size `hw` + (n, n) so sizes differ.

  Args:
    bad: 0-based image -> kind from `LSP_BAD` or `LSP_MORE_BAD` (default
      {1: 'missing_image', 2: 'garbage_image', 3: 'nan'}).

  Returns:
    dict with `xy` (N, 14, 2) 1-based as written, `visible` (N, 14) bool,
    `hw` list of (h, w), `bad` (the dict), `layout`.
  """
  root = Path(root)
  bad = {1: "missing_image", 2: "garbage_image", 3: "nan"} if bad is None else dict(bad)
  rng = np.random.default_rng(seed)
  xy = np.zeros((n, 14, 2))
  visible = np.ones((n, 14), bool)
  sizes = []
  for k in range(n):
    h, w = hw[0] + k, hw[1] + k
    sizes.append((h, w))
    xy[k, :, 0] = rng.uniform(1, w, 14).round(2)
    xy[k, :, 1] = rng.uniform(1, h, 14).round(2)
    if k % 2 == 1:
      visible[k, [6, 7]] = False
      if layout == "lspet":
        xy[k, [6, 7]] = (0.0, -10.0 - k)
    if bad.get(k) == "nan":
      xy[k, 4, 0] = np.nan
    elif bad.get(k) == "inf":
      xy[k, 4, 1] = -np.inf
    elif bad.get(k) == "far_joints":
      xy[k, 0, 0], xy[k, 1, 1] = -1000.0, 1e9
    elif bad.get(k) == "all_far":
      xy[k, :, 0] = -1000.0
      visible[k] = True
  flag = visible.astype(float) if layout == "lspet" else 1.0 - visible
  xyf = np.concatenate([xy, flag[..., None]], axis=-1)  # (N, 14, 3)
  if layout == "lspet":
    joints = xyf.transpose(1, 2, 0)  # 14×3×N
    name = "im{:05d}.jpg"
  elif layout == "lsp":
    joints = xyf.transpose(2, 1, 0)  # 3×14×N
    name = "im{:04d}.jpg"
  else:
    raise ValueError(f"layout must be 'lspet' or 'lsp', not {layout!r}")
  root.mkdir(parents=True, exist_ok=True)
  sio.savemat(root / "joints.mat", {"joints": joints})
  for k in range(n):
    write_image(root / "images" / name.format(k + 1), sizes[k], seed=k, kind=bad.get(k))
  (root / "images").mkdir(exist_ok=True)
  return {"xy": xy, "visible": visible, "hw": sizes, "bad": bad, "layout": layout}


def build(builder_cls, data_dir, manual_dir, **kwargs):
  """Prepares `builder_cls` in-process from `manual_dir` into `data_dir`."""
  builder = builder_cls(data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def check_missing_sources(builder_cls, tmp_path: Path, annotations: str) -> Path:
  """Builds `builder_cls` from a manual dir that does not exist, then from one with an
  empty `images/` and no annotation file `annotations`: each a FileNotFoundError that
  names what is missing. Returns that manual dir."""
  with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
    build(builder_cls, tmp_path / "data", tmp_path / "nowhere")
  manual = tmp_path / "manual"
  (manual / "images").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=re.escape(annotations) + " not found"):
    build(builder_cls, tmp_path / "data", manual)
  return manual


def read_split(builder, split: str) -> list[dict]:
  """Every example of a prepared split, in order."""
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]
