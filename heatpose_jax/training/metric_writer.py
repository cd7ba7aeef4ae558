"""Scalar metrics as JSON lines beside TensorBoard events (big_vision's idea).

`WORKDIR/metrics.jsonl` gets one object per `write`: `{"step": s, "name": value,
...}`; `WORKDIR/tensorboard/` gets the same scalars as TensorBoard events
(tensorboardX, no TensorFlow). Studies and tests read the JSON lines
(`read_scalars`); nothing parses event files. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from heatpose_jax.core import fileio

FILE = "metrics.jsonl"


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, FILE)
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """One line `{"step": step, **scalars}`; non-finite values are written as null."""
    if not self.active or not scalars:
      return
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else None
      if self._tb is not None:
        self._tb.add_scalar(k, v, int(step))
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_rows(workdir: str) -> list[dict]:
  """Every row of `workdir/metrics.jsonl` (a cut-off last line is ignored)."""
  return fileio.read_jsonl(os.path.join(workdir, FILE))


def read_scalars(workdir: str, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """name -> (steps, values) sorted by step; a step written twice (a resumed run)
  keeps the later value; absent names give empty arrays."""
  found: dict[str, dict[int, float]] = {n: {} for n in names}
  for row in read_rows(workdir):
    for n in names:
      if n in row:
        found[n][int(row["step"])] = np.nan if row[n] is None else float(row[n])
  out = {}
  for n, d in found.items():
    steps = np.array(sorted(d), np.int64)
    out[n] = (steps, np.array([d[s] for s in steps], np.float64))
  return out
