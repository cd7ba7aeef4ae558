"""Where a command may write: never over its inputs, never over a file this
project did not write, and a location that can take the files, all checked
before any work starts (docs/reliability.md, classes 1, 4 and 10).

A command lists what it will write, then calls `check`:

    outputs.prepare_dir(out_dir, "--output_dir")       # a folder that can be written
    outputs.check(
      [(overlay, outputs.image_is_ours), (json_path, outputs.json_with(KEYS))],
      inputs=photos,
      way_out="choose another --output_dir",
    )

`check` refuses, with one `OutputError` line naming both paths:
* an output that is one of the inputs (the same file, links followed);
* an output that exists and was not written by this project (`owned(path)` is
  False): a command replaces its own earlier results, nothing else;
* two outputs on one path.

How a file says it was written here: PNG overlays and contact sheets carry the
text chunk `Software: heatpose_jax` (JPEG: the comment), written by
`fileio.save_image`; a JSON result is recognized by the keys its writer always
puts in it (`json_with`); a file that cannot carry a mark (a video, an
exported predictor) is ours when its JSON companion is.

`unique_stems` names one output per input, never two alike (class 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Sequence

from heatpose_jax.core.fileio import IMAGE_MARK as MARK


class OutputError(ValueError):
  """A refused output location (one line naming the paths)."""


def os_reason(e: OSError) -> str:
  """What went wrong, without the path: e.g. 'Read-only file system'."""
  return e.strerror or " ".join(str(e).split()) or type(e).__name__


def _named(path: str, label: str) -> str:
  return f"{label}={path}" if label else path


def prepare_dir(path: str, label: str = "") -> None:
  """Creates the folder `path` if needed and checks that a file can be written in it.

  Args:
    path: the folder.
    label: the flag that gave it (e.g. "--output_dir"), for the message.

  Raises:
    OutputError: `path` is a file or a broken link, cannot be created, or
      cannot be written (read-only file system, permissions, full disk).
  """
  name = _named(path, label)
  if os.path.lexists(path) and not os.path.isdir(path):
    what = "a broken link" if os.path.islink(path) else "a file, not a folder"
    raise OutputError(f"{name}: is {what}")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OutputError(f"{name}: cannot create the folder ({os_reason(e)})") from None
  try:
    fd, probe = tempfile.mkstemp(dir=path, prefix=".heatpose_jax-probe-")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise OutputError(f"{name}: cannot write there ({os_reason(e)})") from None


def prepare_file(path: str, label: str = "") -> None:
  """Checks that the file `path` can be written (its folder is created if needed).

  Raises:
    OutputError: `path` is a folder, or its folder cannot take files.
  """
  name = _named(path, label)
  if os.path.isdir(path):
    raise OutputError(f"{name}: is a folder, not a file")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    prepare_dir(folder)
  except OutputError as e:
    raise OutputError(f"{name}: the folder {e}") from None


def same_file(a: str, b: str) -> bool:
  """Whether `a` and `b` are one file (links followed); False when either is missing."""
  try:
    return os.path.samefile(a, b)
  except OSError:
    return os.path.realpath(a) == os.path.realpath(b)


def image_is_ours(path: str) -> bool:
  """An image written by `fileio.save_image` (PNG text chunk or JPEG comment)."""
  from PIL import Image

  try:
    with Image.open(path) as im:
      software = im.info.get("Software", "")
      comment = im.info.get("comment", b"")
  except Exception:  # noqa: BLE001 - anything unreadable is not ours
    return False
  if isinstance(comment, bytes):
    comment = comment.decode("latin-1")
  return str(software).startswith(MARK) or str(comment).startswith(MARK)


def json_with(keys: Iterable[str]) -> Callable[[str], bool]:
  """`owned` for a JSON result: a JSON object holding every one of `keys`."""
  keys = frozenset(keys)

  def owned(path: str) -> bool:
    try:
      with open(path) as f:
        data = json.load(f)
    except (OSError, ValueError):
      return False
    return isinstance(data, dict) and keys <= data.keys()

  return owned


def companion(owner: str, owned: Callable[[str], bool]) -> Callable[[str], bool]:
  """`owned` for a file that cannot carry a mark: ours when `owner` (its JSON) is ours."""
  return lambda path: owned(owner)


def check(
  outputs: Sequence[tuple[str, Callable[[str], bool]]],
  *,
  inputs: Iterable[str] = (),
  way_out: str,
) -> None:
  """Refuses outputs that would replace an input or a file this project did not write.

  Args:
    outputs: (path, owned) for every file the command will write; `owned(path)`
      says whether an existing file there was written by this project.
    inputs: the files the command reads.
    way_out: what the user can do, e.g. "choose another --output_dir".

  Raises:
    OutputError: one line naming the output and what it would replace.
  """
  inputs = [p for p in inputs if os.path.lexists(p)]
  seen: dict[str, str] = {}
  for path, owned in outputs:
    key = os.path.normcase(os.path.abspath(path))
    if key in seen:
      raise OutputError(f"two outputs would be written to one file, {path}; {way_out}")
    seen[key] = path
    for source in inputs:
      if same_file(path, source):
        raise OutputError(f"{path} would replace the input {source}; {way_out}")
    if os.path.lexists(path) and not owned(path):
      raise OutputError(
        f"{path} exists and was not written by heatpose_jax; it is left as it is: "
        f"{way_out}, or move that file away"
      )


def unique_stems(paths: Sequence[str]) -> list[str]:
  """One output name (without suffix) per input path, never two alike, not even on a
  case-blind disk (class 4: `experiments.predict` names its overlays so).

  A unique stem is the name (photos/a.jpg → a); stems that meet get their path from
  the folder the meeting files share (a/p/x.jpg, b/p/x.jpg → a_p_x, b_p_x), and
  their suffix where that is still not enough (x.jpg, x.png → x_jpg, x_png); a
  name still taken gets -2, -3, ...
  """
  absolute = [os.path.abspath(p) for p in paths]
  names = [os.path.splitext(os.path.basename(p))[0] for p in absolute]
  groups: dict[str, list[int]] = {}
  for i, n in enumerate(names):
    groups.setdefault(_key(n), []).append(i)
  for members in groups.values():
    if len(members) < 2:
      continue
    common = os.path.commonpath([os.path.dirname(absolute[i]) for i in members])
    rel = {i: os.path.relpath(absolute[i], common) for i in members}
    short = {i: os.path.splitext(rel[i])[0].replace(os.sep, "_") for i in members}
    folded = [_key(short[i]) for i in members]
    for i in members:
      suffix = os.path.splitext(rel[i])[1].lstrip(".").lower()
      met = folded.count(_key(short[i])) > 1
      names[i] = f"{short[i]}_{suffix}" if met and suffix else short[i]
  taken: set[str] = set()
  out = []
  for n in names:
    n = _fit_name(n)
    name, k = n, 1
    while _key(name) in taken:
      k += 1
      name = f"{n}-{k}"
    taken.add(_key(name))
    out.append(name)
  return out


def _key(name: str) -> str:
  """Names that one disk may take for the same file: case-blind, Unicode-normalized."""
  return unicodedata.normalize("NFC", name).casefold()


def _fit_name(name: str, limit: int = 200) -> str:
  """A name that fits a file system's 255-byte limit with its suffix: a long one is
  cut and keeps a digest of the whole, so cut names stay apart."""
  if len(name.encode()) <= limit:
    return name
  digest = hashlib.sha1(name.encode()).hexdigest()[:10]
  cut = name.encode()[: limit - 11].decode(errors="ignore")
  return f"{cut}-{digest}"
