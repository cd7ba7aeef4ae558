"""Atomic file writes: a reader never sees a half-written result.

Everything is written to a temporary name in the same directory and renamed
into place (`os.replace` is atomic on POSIX), so an interrupted run leaves
either the old file or the new one. The files that grow by appended lines
(JSON lines) are read with `read_jsonl`, which skips a torn last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
  """`open(path, mode)` on a temporary name, renamed to `path` on success."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
  try:
    try:
      with open(tmp, mode) as f:
        yield f
      os.replace(tmp, path)
    except OSError as e:
      if e.filename not in (None, tmp) or e.errno is None:
        raise
      # Name the file being written, not its temporary name (e.g. a full disk).
      raise OSError(e.errno, e.strerror or str(e), path) from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def _json_default(x):
  if isinstance(x, np.ndarray | np.generic):
    return x.tolist()
  return float(x)


def json_tuples(x):
  """JSON's lists back to the tuples that configs and specs use (dicts recursed)."""
  if isinstance(x, dict):
    return {k: json_tuples(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return tuple(json_tuples(v) for v in x)
  return x


def write_json(path: str, obj) -> None:
  """JSON with numpy values turned into lists and floats."""
  with atomic_open(path) as f:
    json.dump(obj, f, indent=1, default=_json_default)
    f.write("\n")


def read_jsonl(path: str) -> list:
  """The JSON values of `path`, one a line ([] without the file); a line that is not
  JSON (one being appended when a run was killed) is skipped."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return out


def write_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


def save_figure(fig, path: str, dpi: int = 100) -> None:
  """Saves a matplotlib figure (format from the suffix) and closes it."""
  import matplotlib.pyplot as plt

  fmt = os.path.splitext(path)[1][1:] or "png"
  buf = io.BytesIO()
  fig.savefig(buf, format=fmt, dpi=dpi)
  plt.close(fig)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


# The mark `outputs.image_is_ours` reads: this project wrote the image.
IMAGE_MARK = "heatpose_jax"


def save_image(path: str, image: np.ndarray) -> None:
  """An `(H, W, 3)` uint8 array as PNG/JPEG (format from the suffix), marked as
  written by this project (PNG text `Software`, JPEG comment)."""
  from PIL import Image, PngImagePlugin

  buf = io.BytesIO()
  fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(os.path.splitext(path)[1][1:].lower(), "PNG")
  if fmt == "PNG":
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", IMAGE_MARK)
    mark = {"pnginfo": info}
  else:
    mark = {"comment": IMAGE_MARK.encode()}
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format=fmt, **mark)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())
