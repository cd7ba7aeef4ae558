"""Input-pipeline benchmark: host decode/crop, canvas cache, device augmentation
(`measure`), in images per second.

  * host: the pipeline (`input_pipeline.make_dataset`) over an in-memory source
    of synthetic JPEGs: FLIC-sized 480×720 frames cropped to 240×320 ('torso',
    2× shrink, JPEG draft) and 256×256 images cropped to 256×256 ('extent', no
    shrink), with threads or worker processes, and over a canvas cache of the
    same data;
  * device: `augment.augment_batch` jitted on the default JAX backend, against
    its gather warp alone and a `map_coordinates` warp for comparison, with a
    check that the two warps agree.

`measure` returns a JSON-ready dict (rows of data, what, img/s); `format_markdown`
renders it and `write` saves both (input.json for `benchmark.input_side`, input.md
for people).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from heatpose_jax.core import fileio
from heatpose_jax.data import augment
from heatpose_jax.data import joints as joints_lib

SKELETON = joints_lib.SKELETONS["lsp"]


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A photo-like image: smooth blobs plus fine noise (JPEG sizes of real frames)."""
  coarse = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
  img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.float32)
  img += rng.normal(0, 4, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def make_source(n: int, hw: tuple[int, int], seed: int = 0) -> list[dict]:
  """n examples of design.md's dataset features with JPEG-encoded textures."""
  rng = np.random.default_rng(seed)
  h, w = hw
  a = len(SKELETON.annotated)
  textures = [_texture(rng, h, w) for _ in range(min(n, 16))]
  source = []
  for i in range(n):
    buf = io.BytesIO()
    Image.fromarray(textures[i % len(textures)]).save(buf, format="JPEG", quality=90)
    joints = np.stack([rng.uniform(0.3 * w, 0.7 * w, a), rng.uniform(0.2 * h, 0.8 * h, a)], -1)
    source.append(
      {
        "image": buf.getvalue(),
        "image_hw": np.array(hw, np.int32),
        "index": np.int64(i),
        "joints": joints.astype(np.float32),
        "joints_valid": np.ones(a, bool),
        "joints_visible": np.ones(a, bool),
        "center": np.array([w / 2, h / 2], np.float32),
        # 'extent': the 200·scale box fills the canvas; keep the 256 crop at 1:1.
        "scale": np.float32(min(h, w) / 200),
        "head_box": np.zeros(4, np.float32),
        "torso_box": np.array([w / 2 - 60, h / 2 - 80, w / 2 + 60, h / 2 + 60], np.float32),
        "head_size": np.float32(0),
        "torso_size": np.float32(100),
      }
    )
  return source


def _row(data: str, what: str, img_s: float) -> dict[str, Any]:
  return {"data": data, "what": what, "img_s": float(img_s)}


def _time_iter(ds, num_images: int, batch_size: int) -> float:
  """img/s of a batch iterator after one warm-up batch."""
  it = iter(ds)
  next(it)
  n = max(1, num_images // batch_size)
  start = time.perf_counter()
  for _ in range(n):
    next(it)
  rate = n * batch_size / (time.perf_counter() - start)
  if hasattr(it, "close"):
    it.close()
  return rate


def bench_host(
  *,
  num_examples: int = 256,
  num_images: int = 1024,
  batch_size: int = 32,
  threads: Sequence[int] = (1, 2, 4),
  workers: Sequence[int] = (2,),
) -> list[dict[str, Any]]:
  """{data, what, img_s} rows of the host pipeline: single-thread pieces,
  `make_dataset` with `threads` threads or `workers` processes, the canvas cache.

  Args:
    num_examples: distinct encoded images in the source.
    num_images: images timed per `make_dataset` row (4× on the cache).
    batch_size: host batch size.
    threads, workers: the `num_threads` and `worker_count` values to try.
  """
  from heatpose_jax.data import input_pipeline as ip

  rows = []
  configs = {
    "480×720 JPEG → 240×320 'torso'": ((480, 720), "torso", (240, 320)),
    "256×256 JPEG → 256×256 'extent'": ((256, 256), "extent", (256, 256)),
  }
  for name, (src_hw, mode, canvas_hw) in configs.items():
    source = make_source(num_examples, src_hw)
    kb = np.mean([len(ex["image"]) for ex in source]) / 1024
    name = f"{name} ({kb:.0f} KB)"
    crop = ip.Crop(skeleton=SKELETON, crop_mode=mode, canvas_hw=canvas_hw)
    rows += _piece_rows(name, source, crop)
    rows += _dataset_rows(name, source, crop, num_images, batch_size, threads, workers)
  return rows


def _piece_rows(name: str, source: list[dict[str, Any]], crop) -> list[dict[str, Any]]:
  """Single-thread rates of the pieces on the first 64 examples: PIL's full decode,
  and `crop_example` (also without the JPEG draft for 'torso')."""
  from heatpose_jax.data import input_pipeline as ip

  rows = []
  n = min(64, len(source))
  start = time.perf_counter()
  for ex in source[:n]:
    with Image.open(io.BytesIO(ex["image"])) as im:
      im.load()
  rows.append(_row(name, "PIL full decode only, 1 thread", n / (time.perf_counter() - start)))
  for draft in (True, False) if crop.crop_mode == "torso" else (True,):
    start = time.perf_counter()
    for ex in source[:n]:
      ip.crop_example(ex, **{**crop.kwargs(), "use_draft": draft})
    label = "crop_example, 1 thread" + ("" if draft else ", no JPEG draft")
    rows.append(_row(name, label, n / (time.perf_counter() - start)))
  return rows


def _dataset_rows(
  name: str,
  source: list[dict[str, Any]],
  crop,
  num_images: int,
  bs: int,
  threads: Sequence[int],
  workers: Sequence[int],
) -> list[dict[str, Any]]:
  """`make_dataset` rates with each of `threads` threads and `workers` worker
  processes, building the canvas cache, and `make_dataset` on it (4× the images)."""
  from heatpose_jax.data import canvas_cache  # grain: host part only
  from heatpose_jax.data import input_pipeline as ip

  rows = []
  common = dict(crop=crop, global_batch_size=bs, shuffle=True, seed=0)
  for t in threads:
    ds = ip.make_dataset(source, **common, num_threads=int(t))
    rows.append(_row(name, f"make_dataset, {t} threads", _time_iter(ds, num_images, bs)))
  for w in workers:
    ds = ip.make_dataset(source, **common, num_threads=1, worker_count=int(w))
    rate = _time_iter(ds, num_images, bs)
    rows.append(_row(name, f"make_dataset, {w} worker processes", rate))
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    cache = canvas_cache.build_canvas_cache(
      source, crop=crop, path=os.path.join(tmp, "c"), num_threads=2
    )
    rate = len(source) / (time.perf_counter() - start)
    rows.append(_row(name, "build_canvas_cache, 2 threads", rate))
    for t in (1, 2):
      ds = ip.make_dataset(cache, **common, num_threads=t)
      rate = _time_iter(ds, 4 * num_images, bs)
      rows.append(_row(name, f"make_dataset on the cache, {t} threads", rate))
  return rows


def _warp_map_coordinates(images: jax.Array, a: jax.Array) -> jax.Array:
  """The alternative warp: `map_coordinates(order=1)` vmapped over batch and channel."""
  b, h, w, c = images.shape
  inv = augment.invert_affine(a)
  ys, xs = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
  )
  sx = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
  sy = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]

  def one(img, sx, sy):  # (H, W) channel
    return jax.scipy.ndimage.map_coordinates(img, [sy, sx], order=1, mode="constant")

  per_channel = jax.vmap(one, in_axes=(2, None, None), out_axes=2)
  return jax.vmap(per_channel)(images.astype(jnp.float32), sx, sy)


def check_device() -> None:
  """Prints the warp's agreement with map_coordinates and the identity on this backend."""
  rng = np.random.default_rng(0)
  hw = (240, 320)
  images = jnp.asarray(rng.integers(0, 256, (8, *hw, 3), dtype=np.uint8))
  a, _ = augment.sample_affine(jax.random.key(0), 8, hw)
  diff = jnp.abs(
    jax.jit(augment.warp_images)(images, a) - jax.jit(_warp_map_coordinates)(images, a)
  )
  ident = augment.make_affine(jnp.zeros(8), jnp.ones(8), jnp.zeros(8, bool), hw)
  exact = bool(jnp.all(jax.jit(augment.warp_images)(images, ident) == images.astype(jnp.float32)))
  print(f"warp vs map_coordinates: max |diff| {float(diff.max()):.2e}; identity exact: {exact}")


def _device_rate(fn, batch, steps: int) -> float:
  """img/s of `fn(key, batch)` run `steps` times inside one jitted loop (no dispatch cost)."""

  @jax.jit
  def loop(batch):
    def body(i, acc):  # The mean keeps every output pixel alive.
      return acc + fn(jax.random.fold_in(jax.random.key(0), i), batch).mean()

    return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

  loop(batch).block_until_ready()
  start = time.perf_counter()
  loop(batch).block_until_ready()
  return steps * batch["image"].shape[0] / (time.perf_counter() - start)


def bench_device(*, batch_sizes: Sequence[int] = (32, 64), steps: int = 20) -> list[dict[str, Any]]:
  """{data, what, img_s} rows of the device augmentation at each batch size,
  `steps` steps in one jitted loop; prints the warps' agreement first."""
  check_device()
  rows = []
  device = jax.devices()[0].device_kind
  perm = SKELETON.flip_permutation
  j = SKELETON.num_joints
  for canvas_hw in ((240, 320), (256, 256)):
    for b in map(int, batch_sizes):
      rng = np.random.default_rng(0)
      batch = {
        "image": jnp.asarray(rng.integers(0, 256, (b, *canvas_hw, 3), dtype=np.uint8)),
        "joints": jnp.asarray(rng.uniform(0, 200, (b, j, 2)).astype(np.float32)),
        "joints_valid": jnp.ones((b, j)),
        "joints_visible": jnp.ones((b, j)),
        "torso_box": jnp.tile(jnp.array([[50.0, 50, 150, 150]]), (b, 1)),
        "head_size": jnp.ones(b),
        "torso_size": jnp.ones(b),
        "canvas_to_image": jnp.tile(jnp.array([[[1.0, 0, 0], [0, 1, 0]]]), (b, 1, 1)),
      }
      hw = canvas_hw

      def gather_warp(k, x, b=b, hw=hw):
        return augment.warp_images(x["image"], augment.sample_affine(k, b, hw)[0])

      def mc_warp(k, x, b=b, hw=hw):
        return _warp_map_coordinates(x["image"], augment.sample_affine(k, b, hw)[0])

      def full(k, x):
        return augment.augment_batch(k, x, perm)["image"]

      for label, fn in (
        ("augment_batch", full),
        ("warp_images (gather) only", gather_warp),
        ("map_coordinates warp only", mc_warp),
      ):
        rate = _device_rate(fn, batch, steps)
        rows.append(_row(f"{device}, {canvas_hw[0]}×{canvas_hw[1]}", f"{label}, batch {b}", rate))
  return rows


def measure(
  parts: Sequence[str] = ("host", "device"),
  *,
  num_examples: int = 256,
  num_images: int = 1024,
  batch_size: int = 32,
  threads: Sequence[int] = (1, 2, 4),
  workers: Sequence[int] = (2,),
  device_batches: Sequence[int] = (32, 64),
  device_steps: int = 20,
) -> dict[str, Any]:
  """The rows of the `parts`: 'host' (`bench_host` with the first five arguments)
  and 'device' (`bench_device` at `device_batches`, `device_steps`).

  Returns:
    dict: jax (version), backend, cpus, parts and rows ({data, what, img_s}).
  """
  bad = set(parts) - {"host", "device"}
  if bad or not parts:
    raise ValueError(f"parts must be a non-empty subset of ('host', 'device'), got {tuple(parts)}")
  rows = []
  if "host" in parts:
    rows += bench_host(
      num_examples=num_examples,
      num_images=num_images,
      batch_size=batch_size,
      threads=threads,
      workers=workers,
    )
  if "device" in parts:
    rows += bench_device(batch_sizes=device_batches, steps=device_steps)
  return {
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "cpus": os.cpu_count(),
    "parts": list(parts),
    "rows": rows,
  }


def format_markdown(result: dict[str, Any]) -> str:
  """The Markdown table of a `measure` result."""
  lines = [
    f"JAX {result['jax']}, backend {result['backend']}, {result['cpus']} CPUs",
    "",
    "| data | what | img/s |",
    "|---|---|---:|",
  ]
  lines += [f"| {r['data']} | {r['what']} | {r['img_s']:,.0f} |" for r in result["rows"]]
  return "\n".join(lines)


def write(result: dict[str, Any], output_dir: str) -> None:
  """`output_dir/input.json` (the numbers) and `input.md` (`format_markdown`)."""
  fileio.write_json(os.path.join(output_dir, "input.json"), result)
  fileio.write_text(os.path.join(output_dir, "input.md"), format_markdown(result) + "\n")
