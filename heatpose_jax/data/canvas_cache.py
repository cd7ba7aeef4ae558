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

from heatpose_jax.core import fileio
from heatpose_jax.data import input_pipeline

# Bump when crop_example changes its output (3: EXIF orientation applied; 4: COCO-format
# builds' image_id, bbox, area).
CACHE_VERSION = 4


def _source_fingerprint(source: Sequence[dict[str, Any]]) -> str:
  """Cheap identity of a source: its length and the first and last examples' bytes."""
  digest = hashlib.sha256(str(len(source)).encode())
  for i in sorted({0, len(source) - 1}):
    ex = source[i]
    digest.update(str(int(ex["index"])).encode())
    digest.update(bytes(ex["image"]))
    digest.update(np.ascontiguousarray(ex["joints"], np.float32).tobytes())
  return digest.hexdigest()


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

  def check(self, crop: input_pipeline.Crop) -> None:
    """Raises ValueError if the cache was built with another `crop`."""
    have = {k: v for k, v in self.manifest["params"].items() if k != "version"}
    want = crop.record()
    if have != want or self.manifest["params"].get("version") != CACHE_VERSION:
      diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
      raise ValueError(f"canvas cache {self.path} was built with other {diff or ['version']}")


def build_canvas_cache(
  source: Sequence[dict[str, Any]],
  *,
  crop: input_pipeline.Crop,
  path: str,
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
    crop: how each example becomes a canvas.
    path: cache directory.
    num_threads: decoding threads.

  Returns:
    A `CanvasCacheSource` over the cache.
  """
  params = {"version": CACHE_VERSION, **crop.record()}
  fingerprint = _source_fingerprint(source) if len(source) else ""
  manifest_path = os.path.join(path, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      old = json.load(f)
    if old.get("params") == params and old.get("fingerprint") == fingerprint:
      return CanvasCacheSource(path)
    os.remove(manifest_path)  # Stale: invalidate before overwriting the arrays.
  os.makedirs(path, exist_ok=True)

  n = len(source)
  if not n:
    raise ValueError("cannot cache an empty source")
  keys = _write_arrays(source, crop, path, num_threads)
  manifest = {"params": params, "fingerprint": fingerprint, "length": n, "keys": keys}
  tmp = f"{manifest_path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, manifest_path)
  return CanvasCacheSource(path)


def _write_arrays(
  source: Sequence[dict[str, Any]], crop: input_pipeline.Crop, path: str, num_threads: int
) -> list[str]:
  """Crops every example of `source` into `path/<key>.npy`, each moved into place
  when complete; returns the keys, sorted."""
  n = len(source)
  first = crop(source[0])
  keys = sorted(first)
  # The canvases go straight into a memory-mapped file; the small arrays in RAM.
  image_tmp = os.path.join(path, f"image.npy.tmp-{os.getpid()}")
  images = np.lib.format.open_memmap(image_tmp, "w+", np.uint8, (n, *first["image"].shape))
  small = {
    k: np.zeros((n, *np.shape(first[k])), np.asarray(first[k]).dtype) for k in keys if k != "image"
  }

  def fill(i: int) -> None:
    ex = first if i == 0 else crop(source[i])
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
  return keys
