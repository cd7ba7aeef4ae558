"""The canvas cache: a split cropped once into memory-mapped `.npy` canvases.

Decoding and cropping JPEGs is the host's slowest step (≈ 400 images/s on two
cores); reading cached canvases runs at thousands per second. `build_canvas_cache`
crops a whole split with `input_pipeline.crop_example` and stores one `<key>.npy`
per batch-layout key plus `manifest.json` (the crop arguments and a fingerprint of
the source); `input_pipeline.make_dataset` reads a `CanvasCacheSource` with one
copy per batch. Files are written under temporary names and the manifest last,
so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from heatpose_jax import fileio, input_pipeline
from heatpose_jax import joints as joints_lib

CACHE_VERSION = 2  # Bump when crop_example changes its output.


def _source_fingerprint(source: Sequence[dict[str, Any]]) -> str:
  """Cheap identity of a source: its length and the first and last examples' bytes."""
  digest = hashlib.sha256(str(len(source)).encode())
  for i in sorted({0, len(source) - 1}):
    ex = source[i]
    digest.update(str(int(ex["index"])).encode())
    digest.update(bytes(ex["image"]))
    digest.update(np.ascontiguousarray(ex["joints"], np.float32).tobytes())
  return digest.hexdigest()


def cache_params(
  *,
  skeleton: joints_lib.Skeleton,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  image_scale: float | None = None,
  box_scale: float | None = None,
  use_draft: bool = True,
  flic_protocol: str = "",
  clean_labels: bool = False,
  label_noise: float = 0.0,
  noise_seed: int = 0,
) -> dict:
  """The manifest's record of `crop_example`'s arguments (a cache fits only these)."""
  return {
    "version": CACHE_VERSION,
    "skeleton": skeleton.name,
    "model_joints": list(skeleton.model_joints),
    "crop_mode": crop_mode,
    "canvas_hw": list(canvas_hw),
    "image_scale": image_scale,
    "box_scale": box_scale,
    "use_draft": use_draft,
    "flic_protocol": flic_protocol,
    "clean_labels": bool(clean_labels),
    "label_noise": float(label_noise),
    "noise_seed": int(noise_seed) if label_noise else 0,
  }


class CanvasCacheSource:
  """Random access to cropped canvases cached by `build_canvas_cache`.

  Each element is one example of the batch layout (as `crop_example` returns).
  The canvases stay in a memory-mapped .npy (the page cache holds them); the small
  per-example arrays are loaded into memory. Picklable (reopens the files
  lazily), so grain's worker processes can use it.
  """

  def __init__(self, path: str):
    self.path = path
    with open(os.path.join(path, "manifest.json")) as f:
      self.manifest = json.load(f)
    self.keys = tuple(self.manifest["keys"])
    self._arrays: dict[str, np.ndarray] | None = None

  def _open(self) -> dict[str, np.ndarray]:
    if self._arrays is None:
      self._arrays = {
        k: np.load(os.path.join(self.path, f"{k}.npy"), mmap_mode="r" if k == "image" else None)
        for k in self.keys
      }
    return self._arrays

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_arrays"] = None
    return state

  def __len__(self) -> int:
    return int(self.manifest["length"])

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if not -len(self) <= i < len(self):
      raise IndexError(i)
    return {k: np.array(v[i]) for k, v in self._open().items()}

  def read_batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """The examples at `indices` stacked: dict of (len(indices), ...) arrays."""
    arrays = self._open()
    indices = np.asarray(indices, np.int64)
    out = {k: v[indices] for k, v in arrays.items() if k != "image"}
    image = arrays["image"]
    # One copy per canvas straight from the page cache into the batch.
    out["image"] = np.empty((len(indices), *image.shape[1:]), image.dtype)
    for j, i in enumerate(indices):
      out["image"][j] = image[i]
    return out

  def check(self, **crop_kwargs) -> None:
    """Raises ValueError if the cache was built with other `crop_example` arguments."""
    have = self.manifest["params"]
    want = cache_params(**crop_kwargs)
    if have != want:
      diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
      raise ValueError(f"canvas cache {self.path} was built with other {diff}: rebuild it")


def build_canvas_cache(
  source: Sequence[dict[str, Any]],
  *,
  skeleton: joints_lib.Skeleton,
  crop_mode: str,
  canvas_hw: tuple[int, int],
  path: str,
  image_scale: float | None = None,
  box_scale: float | None = None,
  use_draft: bool = True,
  flic_protocol: str = "",
  clean_labels: bool = False,
  label_noise: float = 0.0,
  noise_seed: int = 0,
  num_threads: int = 4,
) -> CanvasCacheSource:
  """Crops a whole split once and stores the canvases; reuses a matching cache.

  `path` (a directory) gets one `<key>.npy` per batch-layout key (`image` is
  (N, H, W, 3) uint8) and `manifest.json` with the crop parameters and a
  fingerprint of the source (its length and first/last examples). A cache whose
  manifest differs is rebuilt. Files are written to a temporary name and moved
  into place, the manifest last, so an interrupted build is never mistaken for a
  finished one.

  Args:
    source: random-access dataset features.
    skeleton, crop_mode, canvas_hw, image_scale, box_scale, use_draft: see
      `crop_example`.
    path: cache directory.
    num_threads: decoding threads.

  Returns:
    A `CanvasCacheSource` over the cache.
  """
  crop_kw = {
    "skeleton": skeleton,
    "crop_mode": crop_mode,
    "canvas_hw": tuple(canvas_hw),
    "image_scale": image_scale,
    "box_scale": box_scale,
    "use_draft": use_draft,
    "flic_protocol": flic_protocol,
    "clean_labels": clean_labels,
    "label_noise": label_noise,
    "noise_seed": noise_seed,
  }
  params = cache_params(**crop_kw)
  fingerprint = _source_fingerprint(source) if len(source) else ""
  manifest_path = os.path.join(path, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      old = json.load(f)
    if old.get("params") == params and old.get("fingerprint") == fingerprint:
      return CanvasCacheSource(path)
    os.remove(manifest_path)  # Stale: invalidate before overwriting the arrays.
  os.makedirs(path, exist_ok=True)

  crop = input_pipeline.CropExample(**crop_kw)
  n = len(source)
  if not n:
    raise ValueError("cannot cache an empty source")
  first = crop.map(source[0])
  keys = sorted(first)
  # The canvases go straight into a memory-mapped file; the small arrays in RAM.
  image_tmp = os.path.join(path, f"image.npy.tmp-{os.getpid()}")
  images = np.lib.format.open_memmap(image_tmp, "w+", np.uint8, (n, *first["image"].shape))
  small = {
    k: np.zeros((n, *np.shape(first[k])), np.asarray(first[k]).dtype) for k in keys if k != "image"
  }

  def fill(i: int) -> None:
    ex = first if i == 0 else crop.map(source[i])
    images[i] = ex["image"]
    for k in small:
      small[k][i] = ex[k]

  from tqdm.auto import tqdm

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    done = pool.map(fill, range(n), chunksize=64)
    for _ in tqdm(
      done, total=n, desc=f"caching {os.path.basename(path)}", unit="img", disable=None
    ):
      pass
  images.flush()  # The open map is released on return; renaming it is fine on POSIX.
  os.replace(image_tmp, os.path.join(path, "image.npy"))
  for k, v in small.items():
    with fileio.atomic_open(os.path.join(path, f"{k}.npy"), "wb") as f:
      np.save(f, v)
  manifest = {"params": params, "fingerprint": fingerprint, "length": n, "keys": keys}
  tmp = f"{manifest_path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, manifest_path)
  return CanvasCacheSource(path)
