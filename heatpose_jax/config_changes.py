"""Resuming with a changed config is never silent.

A run's `config.json` says what its checkpoints mean. When a run resumes with a
config that differs from it, `check` names every changed field and sorts them:

* **safe** (allowed, printed): more or fewer steps after the saved step that keep
  every trained step in its phase (e.g. more steps at the end of the last
  phase), a learning rate of a phase not begun yet, evaluation, logging and
  checkpoint settings, where the data lives (`data_dir`), input workers and the
  canvas cache, the MRF fit (after training);
* **refused** (one line, and the way out): anything that changes what the saved
  steps mean: the model, the data and its augmentation, the seed, the batch
  size, the dtype, a phase boundary the saved steps reached, the learning rate
  and optimizer settings of a phase already begun, adding or dropping a phase,
  `init_from`. The way out is a new workdir (with `init_from=WORKDIR` to start
  from these parameters) or `--allow_config_change`, which resumes anyway.

`record` keeps the history: every config a run was started or resumed with
goes to `config_history.jsonl` (one JSON object a line: the time, the step it
started from, the changed fields, the whole config) before `config.json` is
replaced, so no config is ever overwritten without a record of what ran with what.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections

from heatpose_jax import from_config
from heatpose_jax.core import fileio

HISTORY_FILE = "config_history.jsonl"
ALLOW_FLAG = "--allow_config_change"

# Fields (or prefixes with a trailing '.') whose change never alters what a saved step means.
SAFE = (
  "eval.",
  "evals.",
  "eval_split",
  "eval_every",
  "max_eval_examples",
  "log_every",
  "checkpoint_every",
  "keep_checkpoints",
  "data_dir",
  "worker_count",
  "canvas_cache",
  "spatial_model.",
)


def is_safe(k: str) -> bool:
  """`k` (a flat field name) is in `SAFE`."""
  return any(k == s or (s.endswith(".") and k.startswith(s)) for s in SAFE)


def _boundary_field(k: str) -> bool:
  """A field that moves the phase boundaries: the order or a phase's steps."""
  return k == "phase_order" or (k.startswith("phases.") and k.endswith(".steps"))


def _phase_of(k: str) -> str | None:
  """The phase whose optimizer or loss `k` (`phases.NAME.FIELD`) sets, else None."""
  parts = k.split(".")
  return parts[1] if len(parts) == 3 and parts[0] == "phases" else None


class ConfigChangeError(ValueError):
  """A resumed run's config changes what its saved steps mean (one line, with the way out)."""


def flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """{'model.width': 0.125, ...} with tuples as lists (the JSON view of a config)."""
  if isinstance(config, ml_collections.ConfigDict):
    config = json.loads(config.to_json_best_effort())
  out = {}

  def walk(prefix, x):
    if isinstance(x, dict):
      for k, v in x.items():
        walk(f"{prefix}{k}.", v)
    else:
      out[prefix[:-1]] = x

  walk("", config)
  return out


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """field -> (old value, new value) for every field that differs (missing: None)."""
  return {
    k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
  }


def _phase_at(bounds, t: int) -> str | None:
  return next((name for name, a, b in bounds if a <= t < b), None)


def _phase_problem(old_cfg, new_cfg, saved: int) -> str:
  """Why the new phases change the phase of an already trained step ('' if they do not)."""
  old_b, new_b = from_config.phase_bounds(old_cfg), from_config.phase_bounds(new_cfg)
  if [n for n, _, _ in old_b] != [n for n, _, _ in new_b]:
    return PHASE_SET_CHANGE
  # Every step before `saved` must stay in its phase; phases change only at boundaries.
  points = sorted({0, *(a for _, a, _ in old_b + new_b), *(b for _, _, b in old_b + new_b)})
  for t in (p for p in points if p < saved):
    was, now = _phase_at(old_b, t), _phase_at(new_b, t)
    if was != now:
      if now is None:
        return f"the new config ends at step {t}"
      return f"step {t + 1} was trained as {was}, would be {now}"
  return ""


# Adding or dropping a phase: the optimizer states are saved per phase, so even
# --allow_config_change cannot resume (a new workdir with init_from can).
PHASE_SET_CHANGE = "adds or drops a phase"


def check(old, new, saved_step: int | None, *, allow: bool = False, workdir: str = "") -> dict:
  """The changes from `old` (the saved config) to `new`; refuses unsafe ones.

  Args:
    old, new: `ml_collections.ConfigDict`s (the saved one loaded with the
      defaults of fields added since, `load_saved`).
    saved_step: the newest checkpoint's step (None or 0: nothing saved, every
      change is allowed).
    allow: resume despite unsafe changes (`--allow_config_change`).
    workdir: for the message.

  Returns:
    {"changed": {field: [old, new]}, "refused": [fields], "allowed_by_flag": bool}.

  Raises:
    ConfigChangeError: unsafe changes and not `allow`: one line naming the
      fields, what the saved steps were, and the way out.
  """
  changed = diff(flat(old), flat(new))
  refused, why = [], []
  saved = int(saved_step or 0)
  if saved and changed:
    phase_fields = [k for k in changed if _boundary_field(k)]
    if phase_fields:
      problem = _phase_problem(old, new, saved)
      if problem:
        refused += phase_fields
        why.append(problem)
    begun = {n for n, a, _ in from_config.phase_bounds(old) if a < saved}
    for k in changed:
      if _boundary_field(k) or is_safe(k):
        continue
      if _phase_of(k) is not None and _phase_of(k) not in begun:
        continue  # only a phase not begun uses it
      refused.append(k)
  result = {
    "changed": {k: list(v) for k, v in changed.items()},
    "refused": sorted(refused),
    "allowed_by_flag": bool(refused) and allow,
  }
  if refused and not allow:
    shown = [f"{k} {_short(changed[k][0])} -> {_short(changed[k][1])}" for k in refused[:4]]
    more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
    because = f" ({'; '.join(why)})" if why else ""
    flag = "" if PHASE_SET_CHANGE in why else f", or add {ALLOW_FLAG}"
    raise ConfigChangeError(
      f"{workdir or 'the workdir'}: its checkpoints (to step {saved}) were trained with "
      f"another config: {', '.join(shown)}{more}{because}. Resume without --config (as "
      f"saved), train in a new --workdir (--config.init_from=<this workdir> starts from its "
      f"parameters){flag}"
    )
  return result


def _short(v: Any) -> str:
  text = json.dumps(v)
  return text if len(text) <= 30 else text[:29] + "…"


def _phrase(changed: dict[str, tuple[Any, Any]]) -> str:
  """'field old -> new, ...' of `diff`'s output."""
  return ", ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items())


def describe(result: dict) -> str:
  """One line: the changed fields (and whether the flag let unsafe ones through); '' if none."""
  changed = result["changed"]
  if not changed:
    return ""
  fields = _phrase(changed)
  flag = f" (allowed by {ALLOW_FLAG}: {', '.join(result['refused'])})" if result["refused"] else ""
  return f"config changed since the saved run: {fields}{flag}; recorded in {HISTORY_FILE}"


def model_changes(old, new) -> str:
  """The changed `model.*` fields of two configs, one phrase ('' if none): what a
  checkpoint whose parameters do not fit the model was trained without."""
  changed = diff(flat(old), flat(new))
  return _phrase({k: v for k, v in changed.items() if k.startswith("model.")})


def load_saved(workdir: str) -> ml_collections.ConfigDict | None:
  """The config the run last ran with: the history's last entry, else config.json
  (None without either). So a config.json edited by hand is a change like any other."""
  entries = history(workdir)
  if entries and isinstance(entries[-1].get("config"), dict):
    return from_config.saved_config(entries[-1]["config"])
  if not os.path.exists(os.path.join(workdir, from_config.CONFIG_FILE)):
    return None
  return from_config.load_run_config(workdir)


def history(workdir: str) -> list[dict]:
  """The entries of `workdir/config_history.jsonl` (a torn last line is skipped)."""
  return fileio.read_jsonl(os.path.join(workdir, HISTORY_FILE))


def _append(workdir: str, entry: dict) -> None:
  with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
    f.write(json.dumps(entry) + "\n")
    f.flush()
    os.fsync(f.fileno())


def record(workdir: str, config, start_step: int, result: dict | None) -> None:
  """Appends `config` to the history (if it differs from the last entry) and writes config.json.

  A workdir from before the history existed gets its old config.json as a first
  entry (`"start_step": null`) before anything replaces it.
  """
  new = json.loads(config.to_json_best_effort())
  entries = history(workdir)
  path = os.path.join(workdir, from_config.CONFIG_FILE)
  if not entries and os.path.exists(path):
    with open(path) as f:
      try:
        old = json.load(f)
      except json.JSONDecodeError:
        old = None
    if old is not None and old != new:
      _append(workdir, {"time": None, "start_step": None, "changed": {}, "config": old})
      entries = [{"config": old}]
  if not entries or entries[-1].get("config") != new:
    _append(
      workdir,
      {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "start_step": int(start_step),
        "changed": (result or {}).get("changed", {}),
        "allowed_by_flag": (result or {}).get("allowed_by_flag", False),
        "config": new,
      },
    )
  fileio.write_json(path, new)
