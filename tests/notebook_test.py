"""Runs notebooks/quickstart.ipynb end to end with nbclient: the tiny dataset, a few
steps per phase, on the CPU, in a kernel of this interpreter (no network: the
Colab install cell installs nothing outside Colab)."""

import os
import sys
from pathlib import Path

import pytest

from conftest import FAST_COMPILE

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 300


def _cells(nb, tag):
  found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
  assert found, f"no cell tagged {tag!r}"
  return found


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _has_image(cell) -> bool:
  return any("image/png" in o.get("data", {}) for o in cell.outputs)


def test_notebook_is_clean_and_valid():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, (
        "save the notebook without outputs"
      )
  params = _cells(nb, "parameters")[0].source
  for var in ("DATA", "STEPS", "WORKDIR", "DATA_DIR", "BATCH", "EVAL_EXAMPLES"):
    assert f"HEATPOSE_NB_{var}" in params, var


def _compilation_cache(request, tmp_path) -> str:
  """JAX's persistent compilation cache: pytest's cache dir (kept between runs, so
  a rerun skips most compiling) or, without the cache provider, a temp dir."""
  cache = getattr(request.config, "cache", None)
  return str(cache.mkdir("jax_compilation_cache") if cache else tmp_path / "jax_cache")


def test_notebook_runs(tmp_path, monkeypatch, request):
  # A kernelspec whose argv is this interpreter, found first through JUPYTER_PATH.
  prefix = tmp_path / "jupyter"
  kernelspec.install(kernel_name="python3", prefix=str(prefix))
  monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  # The tiny run, on one CPU device. Compiling dominates: skip most optimizations,
  # use XLA's older (faster to compile) CPU fusion codegen, and cache compiled
  # programs (the notebook compiles the init function a second time).
  monkeypatch.setenv("HEATPOSE_NB_DATA", "tiny")
  monkeypatch.setenv("HEATPOSE_NB_STEPS", "2,1,1")
  monkeypatch.setenv("HEATPOSE_NB_BATCH", "4")
  monkeypatch.setenv("HEATPOSE_NB_EVAL_EXAMPLES", "8")
  monkeypatch.setenv("HEATPOSE_NB_WORKDIR", str(tmp_path / "workdir"))
  monkeypatch.setenv("HEATPOSE_NB_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
  monkeypatch.setenv("XLA_FLAGS", FAST_COMPILE)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", _compilation_cache(request, tmp_path))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
  client = nbclient.NotebookClient(
    nb,
    kernel_name="python3",
    timeout=CELL_TIMEOUT_S,
    resources={"metadata": {"path": str(tmp_path)}},
  )
  client.execute()  # raises CellExecutionError naming the failing cell

  assert _text(nb.cells[-1]).strip() == sys.prefix, "the kernel is not this venv's interpreter"
  assert "Running locally" in _text(_cells(nb, "setup")[0])
  table = _text(_cells(nb, "pckh-table")[0])
  assert "PCKh@0.5" in table and "coarse" in table and "cascade" in table, table
  for tag in ("train-images", "pckh-curve", "heatmaps", "overlays", "predictor"):
    assert _has_image(_cells(nb, tag)[0]), f"cell {tag!r} shows no image"
  assert "joint error" in _text(_cells(nb, "overlays")[0])
  assert (tmp_path / "workdir" / "checkpoints" / "4").is_dir()
  assert os.path.isdir(tmp_path / "data" / "synthetic" / "tiny")
