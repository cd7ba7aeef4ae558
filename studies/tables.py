"""An experiment's table (per-seed values, mean ± std) and the plotting helpers
its figures share. Files are written atomically (`fileio`)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from heatpose_jax.core import fileio


@dataclasses.dataclass
class Table:
  """An experiment's table: per-seed values of each (row, column), notes and figures."""

  title: str
  columns: list[str]
  rows: dict[str, dict[str, list[float] | None]] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  figures: list[str] = dataclasses.field(default_factory=list)

  def add(self, row: str, column: str, value: float | None) -> None:
    """Appends one seed's value (None: not applicable)."""
    if column not in self.columns:
      raise KeyError(f"{self.title}: no column {column!r}")
    cells = self.rows.setdefault(row, {})
    if value is None:
      cells.setdefault(column, None)
    else:
      cells.setdefault(column, [])
      cells[column].append(float(value))

  def stats(self, row: str, column: str) -> tuple[float, float, list[float]] | None:
    """(mean, std, per-seed values) of a cell, None when not applicable."""
    v = self.rows[row].get(column)
    if not v:
      return None
    return float(np.mean(v)), float(np.std(v)), list(v)

  def to_json(self, header: dict) -> dict:
    rows = []
    for r in self.rows:
      values, std, per_seed = {}, {}, {}
      for c in self.columns:
        s = self.stats(r, c)
        values[c] = None if s is None else s[0]
        std[c] = None if s is None else s[1]
        per_seed[c] = None if s is None else s[2]
      rows.append({"name": r, "values": values, "std": std, "per_seed": per_seed})
    return {
      "title": self.title,
      "header": header,
      "columns": self.columns,
      "rows": rows,
      "notes": self.notes,
      "figures": self.figures,
    }

  def to_markdown(self, header: dict) -> str:
    lines = [f"## {self.title}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| | " + " | ".join(self.columns) + " |", "|---" * (len(self.columns) + 1) + "|"]
    for r in self.rows:
      cells = []
      for c in self.columns:
        s = self.stats(r, c)
        f = _fmt(c)
        if s is None:
          cells.append("n/a")
        elif len(s[2]) > 1:
          cells.append(f"{s[0]:{f}} ± {s[1]:{f}}")
        else:
          cells.append(f"{s[0]:{f}}")
      lines.append(f"| {r} | " + " | ".join(cells) + " |")
    if self.notes:
      lines += [""] + [f"- {n}" for n in self.notes]
    if self.figures:
      lines += [""] + [f"![{f}]({f})" for f in self.figures]
    return "\n".join(lines) + "\n"

  def write(self, out_dir: str, header: dict) -> dict:
    """`out_dir/table.json` and `out_dir/table.md`; returns the JSON content."""
    result = self.to_json(header)
    fileio.write_json(os.path.join(out_dir, "table.json"), result)
    fileio.write_text(os.path.join(out_dir, "table.md"), self.to_markdown(header))
    return result


def _fmt(column: str) -> str:
  if column.startswith(("params", "removed")):
    return ",.0f"
  if column.startswith(("σ", "train E1", "val E1")) or "ms" in column:
    return ".3g"
  return ".1f"


def write_summary(workdir: str, names) -> str:
  """`workdir/summary.md`: the `table.md` of each experiment in `names` that has
  one, figure links made relative to `workdir`."""
  parts = ["# heatpose_jax: the paper's experiments\n"]
  for n in names:
    path = os.path.join(workdir, n, "table.md")
    if os.path.exists(path):
      with open(path) as f:
        parts.append(f.read().replace("](", f"]({n}/"))
  path = os.path.join(workdir, "summary.md")
  fileio.write_text(path, "\n".join(parts))
  return path


# --- figures ---------------------------------------------------------------------


def plt():
  """matplotlib.pyplot on the Agg backend (no display)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as pyplot

  return pyplot


def save(fig, out_dir: str, name: str, table: Table) -> None:
  """Saves `fig` as `out_dir/name` (closing it) and lists it under the table."""
  fileio.save_figure(fig, os.path.join(out_dir, name), dpi=100)
  table.figures.append(name)


def plot_mean(ax, x, curves: list[np.ndarray], style: str, label: str, color=None) -> None:
  """Mean over seeds, with a ±std band when there are several."""
  y = np.mean(curves, axis=0)
  (line,) = ax.plot(x, y, style, label=label, color=color)
  if len(curves) > 1:
    s = np.std(curves, axis=0)
    ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)


def curve_axes(ax, phase_ends=(), *, log: bool = True) -> None:
  """A training-curve axis: gray lines at the phase ends (steps), and with `log` a
  log scale when the values span over 20×."""
  lo, hi = ax.get_ylim()
  if log and lo > 0 and hi / lo > 20:
    ax.set_yscale("log")
  for x in phase_ends:
    ax.axvline(x, color="gray", lw=0.5)


def pck_axes(ax, title: str, normalizer: str) -> None:
  """Title, labels, 0–100 % and a legend of a PCK-curve axis."""
  ax.set_title(title, fontsize=9)
  ax.set_xlabel("normalized distance" + (" (PCKh)" if normalizer == "head_size" else " (PCK)"))
  ax.set_ylabel("detection rate, %")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
