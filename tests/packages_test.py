"""The library's packages import one way, downwards (docs/design.md, "Packages").

Every import of a heatpose_jax module, at the top of a file or inside a function,
is read from the source (nothing is imported): a package may import only the
packages its row of `MAY_IMPORT` names, so there is no back arrow and no cycle
between packages; the top level (the entry points that read a config) may import
every package. The library imports no launcher, study or builder, and no package
reads a config (`ml_collections`) or absl flags: the top level turns the config
into explicit arguments.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "heatpose_jax"

# package -> the packages it may import (besides its own modules).
MAY_IMPORT = {
  "core": set(),
  "data": {"core"},
  "model": {"core"},
  "evaluation": {"data", "model", "core"},
  "mrf": {"data", "model", "core"},
  "training": {"data", "model", "core"},
}
TOP = "top level"


def _package(path: Path) -> str:
  """`core`, `data`, ... for a file of a package; `TOP` for the top-level modules and configs/."""
  first = path.relative_to(LIBRARY).parts[0]
  return first if first in MAY_IMPORT else TOP


def _imported(path: Path) -> list[tuple[int, str]]:
  """(line, dotted module) of every import in the file, relative ones resolved."""
  tree = ast.parse(path.read_text(), str(path))
  here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = here.split(".")[: -node.level]
        base = ".".join(parent + ([base] if base else []))
      # `from heatpose_jax.data import joints` imports the module heatpose_jax.data.joints.
      out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
  return out


def _target(module: str) -> str | None:
  """The package (or `TOP`) of an imported heatpose_jax module; None for other libraries."""
  parts = module.split(".")
  if parts[0] != "heatpose_jax":
    return None
  if len(parts) == 1 or parts[1] not in MAY_IMPORT:
    return TOP
  return parts[1]


def _library_files() -> list[Path]:
  return sorted(p for p in LIBRARY.rglob("*.py") if not p.name.endswith("_test.py"))


def test_packages_import_only_the_packages_below_them():
  back = []
  for path in _library_files():
    source = _package(path)
    if source == TOP:
      continue
    for line, module in _imported(path):
      target = _target(module)
      if target is None or target == source:
        continue
      if target not in MAY_IMPORT[source]:
        back.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {module} ({target})")
  assert not back, "imports against the packages' order:\n" + "\n".join(back)


def test_the_packages_order_has_no_cycle():
  # MAY_IMPORT itself is a layering: every package's allowed imports rank below it.
  rank: dict[str, int] = {}
  while len(rank) < len(MAY_IMPORT):
    ready = [p for p, deps in MAY_IMPORT.items() if p not in rank and deps <= set(rank)]
    assert ready, f"a cycle among {sorted(set(MAY_IMPORT) - set(rank))}"
    for p in ready:
      rank[p] = 1 + max((rank[d] for d in MAY_IMPORT[p]), default=0)
  assert set(MAY_IMPORT) == {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").exists()} - {
    "configs"
  }, "a package of heatpose_jax has no row in MAY_IMPORT"


def test_the_library_reads_no_config_flags_or_launchers():
  bad = []
  for path in _library_files():
    for line, module in _imported(path):
      top = module.split(".")[0]
      if top in ("experiments", "studies", "data_prep"):
        bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
      elif _package(path) != TOP and (
        top in ("ml_collections", "absl") and "logging" not in module
      ):
        bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (a config or flags)")
  assert not bad, "\n".join(bad)


def test_no_library_function_is_over_60_lines():
  # Signature, docstring and body together (issue 19): a longer one is split by role.
  long = []
  for path in sorted(LIBRARY.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        lines = node.end_lineno - node.lineno + 1
        if lines > 60:
          long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
  assert not long, long
