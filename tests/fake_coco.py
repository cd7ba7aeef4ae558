"""Small COCO-format keypoint files in the official layout, with their images.

The layout follows pycocotools' `COCO` / `COCO.loadRes` (`coco.py`) and COCO 2017's
person_keypoints_*.json: `info`, `licenses`, `images` [{license, file_name,
coco_url, height, width, date_captured, flickr_url, id}], `annotations`
[{segmentation, num_keypoints, area, iscrowd, keypoints [x, y, v] × K, image_id,
bbox [x, y, w, h], category_id, id}], `categories` [{supercategory, id, name,
keypoints, skeleton}]. Each person is a stick figure drawn with PIL at its
keypoints (pixel indices), its box their extent plus a margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from heatpose_jax.data import coco_format

# Where each COCO joint sits in a person's unit box (x right, y down).
_LAYOUT = {
  "nose": (0.5, 0.08), "eye": (0.08, 0.06), "ear": (0.16, 0.08), "head": (0.5, 0.02),
  "neck": (0.5, 0.17), "shoulder": (0.22, 0.22), "elbow": (0.3, 0.4), "wrist": (0.34, 0.56),
  "hip": (0.16, 0.55), "knee": (0.18, 0.77), "ankle": (0.2, 0.97), "thumb": (0.36, 0.6),
}  # fmt: skip
HW = (120, 160)  # image height, width


def layout(names, box, rng) -> np.ndarray:
  """(K, 2) keypoints of a figure in `box` (x, y, w, h), left side on the image's right."""
  x, y, w, h = box
  out = []
  for side, part in coco_format.joint_parts(names):
    u, v = _LAYOUT[part]
    u = 0.5 if not side else 0.5 + u if side == "l" else 0.5 - u
    out.append((x + u * w, y + v * h))
  pts = np.asarray(out) + rng.uniform(-1.0, 1.0, (len(names), 2))
  return np.round(pts)


def person(names, box, rng, *, v=None, ann_id: int, image_id: int, category_id: int = 1) -> dict:
  """One annotation in COCO's layout (keypoints integer pixel indices, v 0/1/2)."""
  k = len(names)
  v = rng.choice([1, 2, 2, 2], k) if v is None else np.asarray(v)
  pts = layout(names, box, rng)
  kp = np.concatenate([np.where(v[:, None] > 0, pts, 0), v[:, None]], 1).ravel()
  bx, by, bw, bh = box
  return {
    "segmentation": [[bx, by, bx + bw, by, bx + bw, by + bh, bx, by + bh]],
    "num_keypoints": int((v > 0).sum()),
    "area": float(bw * bh * 0.6),
    "iscrowd": 0,
    "keypoints": [int(t) for t in kp],
    "image_id": image_id,
    "bbox": [float(bx), float(by), float(bw), float(bh)],
    "category_id": category_id,
    "id": ann_id,
  }


def draw(path: Path, annotations, names, limbs, seed: int) -> None:
  rng = np.random.default_rng(seed)
  im = Image.fromarray(rng.integers(60, 120, (*HW, 3), dtype=np.uint8))
  d = ImageDraw.Draw(im)
  for ann in annotations:
    kp = np.asarray(ann["keypoints"]).reshape(-1, 3)
    for a, b in limbs:
      if max(a, b) <= len(kp) and kp[a - 1, 2] and kp[b - 1, 2]:
        d.line([tuple(kp[a - 1, :2]), tuple(kp[b - 1, :2])], fill=(230, 200, 40), width=2)
    for x, y, v in kp:
      if v:
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(240, 60, 60) if v == 2 else (60, 60, 240))
  im.save(path, quality=95)


def image_people(names, rng, i: int, image_id: int) -> list[dict]:
  """2 or 3 people side by side (v ∈ {0, 1, 2}, two labelled at least); image 0 also
  has a crowd region, image 1 a person with no labelled keypoint."""
  people = []
  for j in range(2 + i % 2):
    box = (8 + 50 * j + rng.uniform(0, 4), 6 + rng.uniform(0, 6), 36, 100)
    v = rng.choice([0, 1, 2, 2], len(names))
    v[:2] = 2
    people.append(person(names, box, rng, v=v, ann_id=1000 * (i + 1) + j, image_id=image_id))
  none = np.zeros(len(names))
  if i == 0:
    crowd = person(names, (100, 10, 50, 80), rng, v=none, ann_id=9000, image_id=image_id)
    crowd.update(iscrowd=1, segmentation={"counts": [0, 10], "size": list(HW)})
    people.append(crowd)
  if i == 1:
    people.append(person(names, (110, 20, 30, 60), rng, v=none, ann_id=9001, image_id=image_id))
  return people


def write(
  root: Path,
  *,
  names=coco_format.COCO_KEYPOINTS,
  limbs=coco_format.COCO_SKELETON,
  num_images: int = 3,
  seed: int = 0,
  first_image_id: int = 397133,
  name: str = "annotations.json",
) -> dict:
  """Writes ROOT/images/*.jpg and ROOT/NAME; returns the file's data and its path.

  Image 0 also holds a crowd region, image 1 a person with no labelled keypoint;
  people are 2 or 3 per image, v ∈ {0, 1, 2}.
  """
  rng = np.random.default_rng(seed)
  (root / "images").mkdir(parents=True, exist_ok=True)
  images, anns = [], []
  for i in range(num_images):
    image_id = first_image_id + 7 * i
    file_name = f"{image_id:012d}.jpg"
    images.append({
      "license": 1, "file_name": file_name, "coco_url": f"http://example.org/{file_name}",
      "height": HW[0], "width": HW[1], "date_captured": "2013-11-14 17:02:52",
      "flickr_url": "", "id": image_id,
    })  # fmt: skip
    people = image_people(names, rng, i, image_id)
    anns += people
    draw(root / "images" / file_name, people, names, limbs, seed + i)
  data = {
    "info": {"description": "fake", "version": "1.0", "year": 2017},
    "licenses": [{"url": "", "id": 1, "name": "none"}],
    "images": images,
    "annotations": anns,
    "categories": [
      {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(names),
        "skeleton": [list(p) for p in limbs],
      }
    ],  # fmt: skip
  }
  path = root / name
  path.write_text(json.dumps(data))
  return {"data": data, "path": path, "images": root / "images"}


def perfect_results(data: dict, *, noise: float = 0.0, seed: int = 0) -> list[dict]:
  """Keypoint results equal to the scored people (not crowd, some keypoint labelled),
  score 1, plus `noise` px of Gaussian error."""
  rng = np.random.default_rng(seed)
  out = []
  for ann in data["annotations"]:
    if ann["iscrowd"] or not ann["num_keypoints"]:
      continue
    kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
    kp[:, :2] += rng.normal(0, noise, kp[:, :2].shape) if noise else 0
    kp[:, 2] = 1.0
    out.append(
      {
        "image_id": ann["image_id"],
        "category_id": 1,
        "keypoints": kp.ravel().tolist(),
        "score": 1.0,
      }
    )
  return out


# AI Challenger in mmpose's COCO-style files (`aic_train.json` / `aic_val.json`), as
# mmpose's own sample `tests/data/aic/test_aic.json`: `info` {description, version,
# year, date_created}, `licenses`, `categories` [{supercategory, id, name, keypoints,
# skeleton}] (these names, 1-based links = `configs/_base_/datasets/aic.py`'s
# skeleton_info), `images` [{url, file_name (sha1 hex .jpg), height, width, id from
# 1}], `annotations` [{bbox, keypoints [x, y, v] × 14, num_keypoints, image_id,
# category_id, id}]: no segmentation, area or iscrowd (mmpose scores AIC with
# use_area=False), so no crowd region.
AIC_KEYPOINTS = (
  "Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow",
  "Left Wrist", "Right Hip", "Right Knee", "Right Ankle", "Left Hip", "Left Knee",
  "Left Ankle", "Head top", "Neck",
)  # fmt: skip
AIC_SKELETON = (
  (3, 2), (2, 1), (1, 14), (14, 4), (4, 5), (5, 6), (9, 8), (8, 7), (7, 10), (10, 11),
  (11, 12), (13, 14), (1, 7), (4, 10),
)  # fmt: skip
_AIC_ANNOTATION = ("bbox", "keypoints", "num_keypoints", "image_id", "category_id", "id")


def write_aic(root: Path, *, num_images: int = 3, seed: int = 0, name: str = "aic_val.json"):
  """Writes ROOT/images/<sha1>.jpg and ROOT/NAME in AIC's layout; image 1 also holds a
  person with no labelled keypoint (num_keypoints 0). Returns data, path, images."""
  import hashlib

  rng = np.random.default_rng(seed)
  (root / "images").mkdir(parents=True, exist_ok=True)
  images, anns = [], []
  for i in range(num_images):
    image_id = i + 1
    file_name = hashlib.sha1(f"{seed}/{image_id}".encode()).hexdigest() + ".jpg"
    images.append({
      "url": f"http://www.example.org/{i}.jpg", "file_name": file_name,
      "height": HW[0], "width": HW[1], "id": image_id,
    })  # fmt: skip
    people = [
      {k: p[k] for k in _AIC_ANNOTATION}
      for p in image_people(AIC_KEYPOINTS, rng, i, image_id)
      if not p["iscrowd"]
    ]
    anns += people
    draw(root / "images" / file_name, people, AIC_KEYPOINTS, AIC_SKELETON, seed + i)
  data = {
    "info": {
      "description": "fake aic",
      "version": "1.0",
      "year": "2020",
      "date_created": "2020/08/25",
    },
    "licenses": [{"url": "", "id": 1, "name": ""}],
    "categories": [
      {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(AIC_KEYPOINTS),
        "skeleton": [list(p) for p in AIC_SKELETON],
      }
    ],
    "images": images,
    "annotations": anns,
  }
  path = root / name
  path.write_text(json.dumps(data))
  return {"data": data, "path": path, "images": root / "images"}
