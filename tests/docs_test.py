"""The documentation's references resolve: links, repository paths, sections, commands, flags.

Over README.md, BUILD_NOTES.md, docs/**/*.md and data_prep/manual_dirs.md, read as text
(nothing is imported, nothing is run):

* every relative Markdown link or image (`[text](path)`, `![alt](path)`; not http(s),
  mailto) names an existing file or folder, relative to the Markdown file's folder, and
  its `#anchor` (or a pure `#anchor`) is a heading of that file (GitHub's slugs);
* every repository path in the text (prose, code spans and code blocks) that starts
  with one of `PATH_ROOTS` names an existing file or folder, and so does every path
  relative to heatpose_jax/ in a code span (`data/augment.py`); a module path may go on
  with a name the module defines at its top level (`model/inference.predict`);
* every section cited by its title (`docs/training.md`, "Why learning stalled" and
  "Second round") starts a heading of that file;
* every `python -m MODULE` of this project in a code span or a code block names a
  module file, and every `--flag` after it (up to the end of the code span, or of the
  code block's line and its backslash-continued lines) is one that module defines
  (`module_flags`).

A failure lists every bad reference as `file:line: reference (why)`.

Not checked, on purpose (each would only raise false alarms):
* paths a run writes: `workdir/...`, `runs/...`, `WORKDIR/eval_<split>/...` do not start
  with a `PATH_ROOTS` folder; under one, patterns and placeholders are skipped
  (`_is_placeholder`: `precision.{json,md}`, `precision_*.png`, `evaluators/NAME.py`);
* `REV:path` (`git show 6322df3:docs/figures/...`): a file at another commit;
* other projects' paths that look like ours (`EXTERNAL_PATHS`, `EXTERNAL_PACKAGE_PATHS`);
* package-relative paths (`data/augment.py`, `model/inference.predict`) outside code
  spans: in prose, "training/evaluation" is no path;
* `python -m` of another project (pytest, venv) or elided (`python -m experiments.…`),
  commands in prose outside code, and flags in a shell comment after a command (they
  may be another command's);
* `--config.FIELD` overrides: any field counts (the configs are not imported);
* Python names written `module.name` (`inference.predict`): the docs also name what a
  module used to define (docs/design.md's "before" column), instances
  (`predictor.draw`) and config fields (`augment.rotation`) that way, so only the
  path forms (`model/inference.predict`) are checked.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The folders whose paths the docs cite; a path is checked when it starts with one.
PATH_ROOTS = (
  "heatpose_jax",
  "experiments",
  "studies",
  "data_prep",
  "scripts",
  "tests",
  "docs",
  "notebooks",
  ".ci",
)
# Paths that look like this repository's but are another project's: mmpose's sample file
# (docs/coco.md, the AI Challenger row).
EXTERNAL_PATHS = {"tests/data/aic/test_aic.json"}
# Package-relative paths (`data/augment.py`) that are other projects': mmpose's dataset
# configs (docs/coco.md), the stacked-hourglass / HRNet annotation files
# (data_prep/manual_dirs.md).
EXTERNAL_PACKAGE_PATHS = ("configs/_base_/", "data/mpii/annot/")
# Upper-case words of real file names (any other upper-case word is a placeholder).
UPPER_CASE_NAMES = {"README", "LICENSE", "CITATION", "BUILD", "NOTES"}
# The project's packages: `python -m` of anything else (pytest, venv) is not checked.
PACKAGES = ("experiments", "data_prep", "studies", "heatpose_jax")
# Flags of every absl program (absl.app and absl.logging define them).
ABSL_FLAGS = {
  "help",
  "helpfull",
  "helpshort",
  "helpxml",
  "flagfile",
  "undefok",
  "verbosity",
  "v",
  "logtostderr",
  "alsologtostderr",
  "log_dir",
  "stderrthreshold",
  "showprefixforinfo",
  "logger_levels",
  "only_check_args",
  "pdb",
  "pdb_post_mortem",
  "run_with_pdb",
  "run_with_profiling",
  "profile_file",
  "use_cprofile_for_profiling",
}
# Flags a module defines from a table rather than by name: data_prep/build.py defines
# one integer or float flag per row of `_OVERRIDES` (`("num_train", int, "...")`) in a loop.
TABLE_FLAGS = {"data_prep/build.py": re.compile(r'^\s*\("(\w+)",\s*(?:int|float),', re.M)}

_DEFINE = re.compile(r"\bDEFINE_\w+\(\s*[\"'](\w+)[\"']")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_PATH = re.compile(
  r"(?<![\w./~$:-])((?:" + "|".join(re.escape(r) for r in PATH_ROOTS) + r")/[\w./-]*)(.?)"
)
# heatpose_jax's packages, which the docs also name without `heatpose_jax/`.
_PACKAGE_PATH = re.compile(
  r"(?<![\w./~$:-])((?:core|data|model|evaluation|mrf|training|configs)/[\w./-]*)(.?)"
)
_SECTIONS = re.compile(
  r"(?<![\w/.-])([\w./-]+\.md)`?,\s+(\"[^\"]+\"(?:(?:,\s*|\s+and\s+)\"[^\"]+\")*)", re.S
)
_IMPORT = re.compile(rf"^from ((?:{'|'.join(PACKAGES)})[\w.]*) import (\w+)", re.M)
_COMMAND = re.compile(r"\bpython -m ([\w.]+)")
_FLAG = re.compile(r"(?<![\w=/.-])--([A-Za-z]\w*)((?:\.[\w<>*]+)*)")


def doc_files() -> list[Path]:
  docs = sorted((ROOT / "docs").rglob("*.md"))
  return [ROOT / "README.md", ROOT / "BUILD_NOTES.md", *docs, ROOT / "data_prep/manual_dirs.md"]


class Doc:
  """A Markdown file: its text, its fenced code blocks and code spans as offset ranges."""

  def __init__(self, path: Path, text: str | None = None):
    self.path = path
    self.name = str(path.relative_to(ROOT))
    self.text = path.read_text() if text is None else text
    self.fences: list[tuple[int, int]] = []  # (start, end) of each code block's content
    lines = self.text.splitlines(keepends=True)
    offset, start, marker = 0, None, ""
    for line in lines:
      m = _FENCE.match(line)
      if start is None and m:
        start, marker = offset + len(line), m.group(1)
      elif start is not None and m and m.group(1).startswith(marker):
        self.fences.append((start, offset))
        start = None
      offset += len(line)
    if start is not None:
      self.fences.append((start, offset))
    # The prose: the text with code blocks blanked (offsets and line numbers kept).
    self.prose = self._blank(self.text, self.fences)
    self.spans = [(m.start(2), m.end(2)) for m in _CODE_SPAN.finditer(self.prose)]
    # The prose without its code spans: where links are.
    self.plain = self._blank(
      self.prose, [(m.start(), m.end()) for m in _CODE_SPAN.finditer(self.prose)]
    )

  @staticmethod
  def _blank(text: str, ranges) -> str:
    chars = list(text)
    for a, b in ranges:
      for i in range(a, b):
        if chars[i] != "\n":
          chars[i] = " "
    return "".join(chars)

  def line(self, offset: int) -> int:
    return self.text.count("\n", 0, offset) + 1

  def where(self, offset: int) -> str:
    return f"{self.name}:{self.line(offset)}"

  @functools.cached_property
  def anchors(self) -> set[str]:
    """GitHub's ids of the headings: lower case, punctuation dropped, spaces to hyphens;
    a repeated one gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for title in self.headings:
      title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)
      slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
      n = seen.get(slug, 0)
      seen[slug] = n + 1
      out.add(slug if n == 0 else f"{slug}-{n}")
    return out

  @functools.cached_property
  def headings(self) -> list[str]:
    return [m.group(1) for line in self.prose.splitlines() if (m := _HEADING.match(line))]


@functools.cache
def load(path: Path) -> Doc:
  return Doc(path)


def _is_placeholder(path: str, after: str) -> bool:
  """A pattern or a path a run writes, not a file: it goes on with a placeholder (`<`,
  `{`, `*`, `[`: `eval_<split>/`, `precision.{json,md}`, `precision_*.png`) or has an
  upper-case word (`NAME.py`, `WORKDIR`, `pool_N`) other than a real file's (`README`)."""
  if after and after in "<{*[":
    return True
  words = re.split(r"[^A-Za-z0-9]+", path)
  return any(w.isupper() and w not in UPPER_CASE_NAMES for w in words)


def check_links(doc: Doc) -> list[str]:
  bad = []
  for m in _LINK.finditer(doc.plain):
    target = m.group(1)
    if re.match(r"(https?|mailto|ftp):", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (doc.path.parent / path).resolve()
    if path and not resolved.exists():
      bad.append(f"{doc.where(m.start())}: {target} (no such file)")
      continue
    if not anchor or (path and resolved.suffix != ".md"):
      continue
    if anchor not in (load(resolved) if path else doc).anchors:
      bad.append(f"{doc.where(m.start())}: {target} (no heading with this anchor)")
  return bad


def _top_level_names(path: Path) -> set[str]:
  """The names a module defines at its top level (def, class, assignment), from its text."""
  found = re.findall(
    r"^(?:(?:async\s+)?def|class)\s+(\w+)|^(\w+)\s*(?::[^=\n]*)?=", path.read_text(), re.M
  )
  return {a or b for a, b in found}


def _resolves(path: str, base: Path) -> bool:
  """`path` under `base` is a file or folder; or a module without `.py`
  (`evaluation/metrics`), or one with a name it defines (`model/inference.predict`)."""
  if (base / path).exists() or (base / f"{path}.py").is_file():
    return True
  folder, _, last = path.rpartition("/")
  stem, _, attr = last.partition(".")
  module = base / folder / f"{stem}.py"
  return bool(attr) and module.is_file() and attr.split(".")[0] in _top_level_names(module)


def check_paths(doc: Doc) -> list[str]:
  bad = []
  for m in _PATH.finditer(doc.text):
    path = m.group(1).rstrip(".")
    if path in EXTERNAL_PATHS or _resolves(path, ROOT) or _is_placeholder(path, m.group(2)):
      continue
    bad.append(f"{doc.where(m.start())}: {path} (no such file in the repository)")
  for a, b in doc.spans:  # only code spans: in prose, `training/evaluation` is no path
    for m in _PACKAGE_PATH.finditer(doc.text, a, b):
      path = m.group(1).rstrip(".")
      if path.startswith(EXTERNAL_PACKAGE_PATHS) or _is_placeholder(path, m.group(2)):
        continue
      if not _resolves(path, ROOT / "heatpose_jax"):
        bad.append(f"{doc.where(m.start())}: {path} (not in heatpose_jax/)")
  return bad


def _heading_key(title: str) -> str:
  return " ".join(title.replace("`", "").split()).casefold()


def check_sections(doc: Doc) -> list[str]:
  bad = []
  for m in _SECTIONS.finditer(doc.prose):
    name = m.group(1)
    candidates = [ROOT / name, doc.path.parent / name]
    target = next((p for p in candidates if p.is_file()), None)
    if target is None:
      bad.append(f"{doc.where(m.start())}: {name} (no such file)")
      continue
    headings = [_heading_key(h) for h in load(target.resolve()).headings]
    for title in re.findall(r"\"([^\"]+)\"", m.group(2)):
      if not any(h.startswith(_heading_key(title)) for h in headings):
        bad.append(f'{doc.where(m.start())}: {name}, "{title}" (no such section)')
  return bad


def _module_file(module: str) -> Path | None:
  base = ROOT / module.replace(".", "/")
  for path in (base.with_suffix(".py"), base / "__main__.py"):
    if path.is_file():
      return path
  return None


def _defined(source: str) -> tuple[set[str], dict[str, set[str]]]:
  """(the flags a module defines at import, {function: the flags it defines})."""
  # Where each top-level statement starts, and the function it is (None: not a def).
  starts = [
    (m.start(), m.group(1)) for m in re.finditer(r"^(?:def (\w+)\(|[A-Za-z_@])", source, re.M)
  ]
  top: set[str] = set()
  functions: dict[str, set[str]] = {}
  for m in _DEFINE.finditer(source):
    current = None
    for offset, function in starts:
      if offset > m.start():
        break
      current = function
    (functions.setdefault(current, set()) if current else top).add(m.group(1))
  return top, functions


@functools.cache
def module_flags(path: Path) -> frozenset[str]:
  """The flags of the program `path`, from its source: every `DEFINE_*("name"` in it
  (at import or in a function of its own, as data_prep/build.py's `_define_flags`), its
  `TABLE_FLAGS`; and, for each project module it imports (experiments/launch.py), the
  flags that module defines at import and those of each of its functions this one
  calls (`launch.define_study_flags(...)`: `--config`, `--workdir`, ...)."""
  source = path.read_text()
  names = set(_DEFINE.findall(source))
  rel = str(path.relative_to(ROOT))
  if rel in TABLE_FLAGS:
    names |= set(TABLE_FLAGS[rel].findall(source))
  imports = _IMPORT.findall(source)
  for package, name in imports:
    helper = _module_file(f"{package}.{name}")
    if helper is None:
      continue
    top, functions = _defined(helper.read_text())
    names |= top
    for function, defined in functions.items():
      if re.search(rf"\b{name}\.{function}\(", source):
        names |= defined
  return frozenset(names)


def _command_args(doc: Doc, m: re.Match) -> str | None:
  """The text after the command `m` up to the end of its code span, or of its code
  block line and the lines its backslashes continue, shell comments blanked (offsets
  kept), up to a next `python -m`; None outside code."""
  span = next((b for a, b in doc.spans if a <= m.start() < b), None)
  fence = next((b for a, b in doc.fences if a <= m.start() < b), None)
  if span is not None:
    args = doc.text[m.end() : span]
  elif fence is not None:
    end = m.start()
    while (nl := doc.text.find("\n", end, fence)) >= 0:
      if not doc.text[end:nl].rstrip(" \t").endswith("\\"):
        break
      end = nl + 1
    args = doc.text[m.end() : nl if nl >= 0 else fence]
    # A comment after the command may name another command's flags.
    args = re.sub(r"(?<!\S)#[^\n]*", lambda c: " " * len(c.group()), args)
  else:
    return None
  nxt = _COMMAND.search(args)
  return args[: nxt.start()] if nxt else args


def _flag_problem(flag: str, tail: str, defined: frozenset[str]) -> str | None:
  if flag in defined or flag in ABSL_FLAGS:
    if tail and flag != "config":
      return "a dotted override of a flag that is not --config"
    return None
  if flag.startswith("no") and (flag[2:] in defined or flag[2:] in ABSL_FLAGS):
    return None
  return "not a flag of this module"


def check_commands(doc: Doc) -> list[str]:
  bad = []
  for m in _COMMAND.finditer(doc.text):
    module = m.group(1)
    if module.endswith(".") or module.split(".")[0] not in PACKAGES:
      continue  # `python -m experiments.…` (any launcher), `python -m pytest`
    args = _command_args(doc, m)
    if args is None:
      continue
    path = _module_file(module)
    if path is None:
      bad.append(f"{doc.where(m.start())}: python -m {module} (no such module)")
      continue
    defined = module_flags(path)
    for f in _FLAG.finditer(args):
      problem = _flag_problem(f.group(1), f.group(2), defined)
      if problem:
        where = doc.where(m.end() + f.start())
        bad.append(f"{where}: python -m {module} --{f.group(1)}{f.group(2)} ({problem})")
  return bad


def _report(problems: list[str]) -> str:
  return f"{len(problems)} bad references:\n" + "\n".join(problems)


@pytest.mark.parametrize(
  "check",
  [check_links, check_paths, check_sections, check_commands],
  ids=["links resolve", "repository paths exist", "cited sections exist", "commands and flags"],
)
def test_every_doc_passes(check):
  problems = [p for path in doc_files() for p in check(load(path))]
  assert not problems, _report(problems)


# A page with one stale reference of each kind (and look-alikes that are fine), which
# the checks must report, line by line.
STALE = """\
# Stale

See [the design](design.md), [gone](gone.md), [a section](training.md#speed),
[no section](training.md#nope), [here](#stale), ![figure](figures/nope.png).
`heatpose_jax/inference.py`, heatpose_jax/model/inference.py, `data/augment.py`,
`model/inference.predict`, `model/inference.nope`, `WORKDIR/eval_<split>/`,
`docs/results/precision.{json,md}`, `heatpose_jax/evaluation/evaluators/NAME.py`,
`git show 6322df3:docs/figures/old.png`, `docs/README.md`, training/evaluation.
`docs/training.md`, "Why learning stalled" and "Ninety-ninth round"; docs/model.md, "Flip test".
`python -m experiments.predict --flip_test --noflip_test --config.eval.flip_test=True
--verbosity=1 --flip_tests` and `python -m experiments.nope --x`.

```bash
python -m experiments.precision_study --config=c.py --workdir=w --seeds=0 \\
    --max_parallel=1 --out_dir=o --tiny   # --tiny is the profile's
python -m data_prep.build --dataset=synthetic --num_train=10 --label_noise=1 --predict
python -m experiments.train --workdir=w --config.x=1 --workdir.y=2 --num_train=3
```
"""


def test_the_checks_find_what_they_look_for():
  """Each check reports a stale reference of its kind and passes the ones that resolve
  (a parser that finds nothing would pass every page)."""
  doc = Doc(ROOT / "docs" / "stale_example.md", STALE)
  found = check_links(doc) + check_paths(doc) + check_sections(doc) + check_commands(doc)
  assert found == [
    "docs/stale_example.md:3: gone.md (no such file)",
    "docs/stale_example.md:4: training.md#nope (no heading with this anchor)",
    "docs/stale_example.md:4: figures/nope.png (no such file)",
    "docs/stale_example.md:5: heatpose_jax/inference.py (no such file in the repository)",
    "docs/stale_example.md:8: docs/README.md (no such file in the repository)",
    "docs/stale_example.md:6: model/inference.nope (not in heatpose_jax/)",
    'docs/stale_example.md:9: docs/training.md, "Ninety-ninth round" (no such section)',
    "docs/stale_example.md:11: python -m experiments.predict --flip_tests (not a flag of this module)",
    "docs/stale_example.md:11: python -m experiments.nope (no such module)",
    "docs/stale_example.md:15: python -m experiments.precision_study --tiny (not a flag of this module)",
    "docs/stale_example.md:16: python -m data_prep.build --predict (not a flag of this module)",
    "docs/stale_example.md:17: python -m experiments.train --workdir.y (a dotted override of a flag that is not --config)",
    "docs/stale_example.md:17: python -m experiments.train --num_train (not a flag of this module)",
  ], "\n".join(found)
  # The flags of a module include those its helpers define (experiments/launch.py).
  assert {"distributed", "compilation_cache_dir", "config", "workdir", "max_parallel", "seeds"} <= (
    module_flags(ROOT / "experiments/precision_study.py")
  )
