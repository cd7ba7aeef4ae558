"""Evaluators: named scores of one prediction pass (big_vision's `config.evals`).

An evaluator is a module that exports

  evaluate(preds, *, skeleton, pools, **kwargs) -> dict   # JSON-ready
  scalars(result) -> Iterator[(name, value)]             # what training logs

and optionally `format_table(result) -> str` (its text in table.txt and on
stdout) and `check(**kwargs)` (raises ValueError on a bad value, when the config
is checked, before anything is compiled; a `check` that takes a `skeleton`
argument also gets the dataset's, where the caller knows it: `oks` checks that
its sigmas fit the joints).

`preds` is `evaluator.predict_dataset`'s output, in the canvas frame ((x, y),
0-based input pixels): the estimates present among `MODEL_KEYS` `(N, J, 2)`,
`scores` `(N, J)`, and the batch's fields over the real examples: `joints`
`(N, J, 2)`, `joints_valid` `(N, J)` (1 = annotated), `joints_visible`, the
normalizers `head_size` / `torso_size` `(N,)`, `torso_box` `(N, 4)`,
`canvas_to_image` `(N, 2, 3)`, `index` `(N,)`, the coarse loss `e1_sum` /
`e1_count` `(N,)`; COCO-format builds add each person's annotation as stored, in
the image frame: `image_id` `(N,)` int32, `bbox` `(N, 4)` x1, y1, x2, y2, `area`
`(N,)` (0 where the file has none). `skeleton` is the dataset's `joints.Skeleton` (model-order
joints), `pools` its table's pooled columns (`DatasetSpec.pools`).

A run configures them by name, `config.evals.NAME = dict(type=TYPE, **kwargs)`:
TYPE is a bare name for a module of this package (`pck`, `sigma`, `oks`) or a dotted
module path, imported as is (a user's module: no library file changes; the
path travels in the run's config.json, so `experiments.evaluate` imports it in
its own process). How to add one: docs/design.md, "How to add an evaluator".
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType

# The estimates an evaluator scores when present: the coarse argmax, the cascade,
# and the same with the MRF spatial model's person selection.
MODEL_KEYS = ("coarse", "cascade", "coarse_mrf", "cascade_mrf")
# The headline's scalar prefixes (`evaluator.scalars`), which no evaluator's name may shadow.
RESERVED_NAMES = (*MODEL_KEYS, "val_e1")


def estimates(preds: Mapping) -> list[str]:
  """The `MODEL_KEYS` present in `preds` (or in a result keyed by estimate), in order."""
  return [m for m in MODEL_KEYS if m in preds]


def load(entry: Mapping, skeleton=None) -> tuple[ModuleType, dict]:
  """`(module, kwargs)` of one `config.evals` entry, its arguments checked
  (with `skeleton`, the dataset's `joints.Skeleton`, where its `check` takes one).

  Raises:
    ValueError: no `type`, no such module, a module without `evaluate` /
      `scalars`, an argument `evaluate` does not take (or a missing one), or a
      value the module's `check` refuses (one line, without the entry's name).
  """
  try:
    kwargs = entry.to_dict() if hasattr(entry, "to_dict") else dict(entry)
  except (TypeError, ValueError):
    raise ValueError(f"{entry!r}: must be dict(type=MODULE, **arguments)") from None
  type_ = kwargs.pop("type", None)
  if not isinstance(type_, str) or not type_:
    raise ValueError("needs a type: a module name ('pck') or a dotted module path")
  path = type_ if "." in type_ else f"{__name__}.{type_}"
  try:
    module = importlib.import_module(path)
  except ModuleNotFoundError as e:
    raise ValueError(f"type={type_!r}: no module {e.name!r}") from None
  lacks = [f"{f}()" for f in ("evaluate", "scalars") if not callable(getattr(module, f, None))]
  if lacks:
    raise ValueError(f"type={type_!r}: module {path} has no {' or '.join(lacks)}")
  sig = inspect.signature(module.evaluate)
  params = list(sig.parameters.values())[1:]  # after `preds`
  named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
  takes = [p.name for p in params if p.kind in named and p.name not in ("skeleton", "pools")]
  unknown = sorted(set(kwargs) - set(takes))
  if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    raise ValueError(f"type={type_!r}: unknown argument {unknown} (it takes {takes})")
  try:  # a required argument missing
    sig.bind({}, skeleton=None, pools=(), **kwargs)
  except TypeError as e:
    raise ValueError(f"type={type_!r}: {e}") from None
  if callable(getattr(module, "check", None)):
    extra = {}
    if skeleton is not None and "skeleton" in inspect.signature(module.check).parameters:
      extra["skeleton"] = skeleton
    module.check(**kwargs, **extra)
  return module, kwargs


def load_all(evals: Mapping[str, Mapping], where: str = "evals", skeleton=None) -> dict[str, tuple]:
  """`{name: (module, kwargs)}` of every entry of `evals` (`config.evals`), in order;
  `skeleton` (the dataset's) goes to the `check` of the modules that take it.

  Raises:
    ValueError: one line naming `where.NAME` and what is wrong with it (`load`),
      or a name that would shadow the headline's scalars (`RESERVED_NAMES`).
  """
  out = {}
  for name, entry in evals.items():
    try:
      if name in RESERVED_NAMES:
        raise ValueError(f"the name is one of the headline's scalar prefixes {RESERVED_NAMES}")
      out[name] = load(entry, skeleton)
    except ValueError as e:
      raise ValueError(f"{where}.{name}: {e}") from None
  return out
