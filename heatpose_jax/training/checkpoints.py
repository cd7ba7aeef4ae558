"""The one checkpoint path: save, resume, and parameters-only restore (orbax).

A checkpoint is `WORKDIR/checkpoints/<step>/` with two items: `params` (the
model parameters) and `train` (the global step and every phase's optimizer
state). Evaluation and inference restore `params` alone against an abstract
tree made with `jax.eval_shape` (nothing is compiled, the optimizer state is
never read). Orbax writes each checkpoint under a temporary name and renames
it when complete, so a killed save never looks finished.

What is saved is checked first: a state with a non-finite number is never
written. Resume walks back from the newest checkpoint to the newest one that
reads and is finite, and moves each unreadable one aside (to
`<step>.unreadable-<time>`, nothing is deleted) with a warning saying why.

Every restore runs under `reads_end_before_their_loop`: when one array of a
checkpoint fails to read, orbax closes its event loop while TensorStore still
reads the others, whose completions then land on a closed loop ("Event loop is
closed" tracebacks from TensorStore's threads, "Exception ignored in coroutine"
when they are collected). Here the loop first lets those reads finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

SUBDIR = "checkpoints"


def directory(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, SUBDIR))


# How long a failed restore's leftover reads may take to end before they are cancelled.
_DRAIN_TIMEOUT_S = 120.0


# asyncio's policies are deprecated from Python 3.14 and go in 3.16: there, restores
# run as orbax runs them (no draining).
_DefaultPolicy = getattr(asyncio, "DefaultEventLoopPolicy", None)


class _DrainingLoop(_DefaultPolicy._loop_factory if _DefaultPolicy else object):  # platform's
  """An event loop that, when closed, first runs its unfinished tasks to their end.

  Orbax runs each restore in a fresh loop (`run_until_complete`, then `close`).
  When one read of an `asyncio.gather` fails, the gather returns at once and
  the loop is closed with its sibling reads still in flight in TensorStore.
  This loop waits for them (their results and errors are collected and
  dropped), so every callback arrives while the loop is open; work still
  unfinished after `_DRAIN_TIMEOUT_S` is cancelled and awaited.
  """

  def close(self) -> None:
    if not self.is_closed() and not self.is_running():
      try:
        self._drain()
      except Exception as e:  # noqa: BLE001 - closing must not fail because a read did
        logging.debug("pending checkpoint reads: %s", e)
    super().close()

  def _drain(self) -> None:
    end, cancelled, seen = time.monotonic() + _DRAIN_TIMEOUT_S, False, set()
    # A task may start others (nested gathers): until none is left.
    while pending := {t for t in asyncio.all_tasks(self) if not t.done()}:
      seen |= pending
      left = end - time.monotonic()
      if left <= 0:
        if cancelled:
          break
        for t in pending:
          t.cancel()
        cancelled, left = True, 5.0
        end = time.monotonic() + left
      self.run_until_complete(asyncio.wait(pending, timeout=left))
    for t in seen:  # their errors are the failed restore's: retrieved, not reported again
      if t.done() and not t.cancelled():
        t.exception()
    self.run_until_complete(self.shutdown_default_executor())


class _DrainingPolicy(_DefaultPolicy or object):
  _loop_factory = _DrainingLoop


_policy_lock = threading.RLock()


@contextlib.contextmanager
def reads_end_before_their_loop():
  """Within: event loops created (by orbax) wait for their in-flight reads before closing."""
  if _DefaultPolicy is None:
    yield
    return
  with _policy_lock:
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
      yield
    finally:
      asyncio.set_event_loop_policy(previous)


def manager(workdir: str, keep: int | None = None, *, create: bool = True):
  """A `CheckpointManager` over `WORKDIR/checkpoints` keeping the newest `keep`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
  handlers = {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler()}
  return ocp.CheckpointManager(directory(workdir), options=options, item_handlers=handlers)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def all_finite(tree) -> bool:
  """Whether every floating-point number of `tree` is finite (multi-host safe)."""
  out = _all_finite(tree)
  if not out.is_fully_addressable:
    out = out.addressable_shards[0].data
  return bool(np.asarray(out))


def save(mngr, step: int, state) -> None:
  """Saves a `TrainState` (params, step, optimizer states) as checkpoint `step`.

  Raises:
    FloatingPointError: the state holds a non-finite number (nothing is written).
  """
  if not all_finite((state.params, state.opt_state)):
    raise FloatingPointError(
      f"step {step}: the parameters or optimizer state hold NaN or inf; not saved "
      f"(last good checkpoint: step {last_step(mngr)} in {mngr.directory})"
    )
  train = {"step": state.step, "opt_state": state.opt_state}
  mngr.save(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params), train=ocp.args.StandardSave(train)
    ),
  )


def last_step(mngr) -> int | None:
  mngr.wait_until_finished()
  return mngr.latest_step()


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _set_aside(mngr, step: int, reason: str) -> None:
  path = os.path.join(str(mngr.directory), str(step))
  target = f"{path}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
  if jax.process_index() == 0 and os.path.exists(path):
    os.replace(path, target)
  logging.warning("checkpoint %s skipped (%s); moved to %s", path, reason, target)
  mngr.reload()


def _reason(e: Exception) -> str:
  """The first sentence of an exception's message (orbax/TensorStore append pages of detail)."""
  text = " ".join(str(e).split())
  first = text.split(". ")[0][:200]
  return f"{type(e).__name__}: {first}"


def restore_latest(mngr, target):
  """The newest readable, finite checkpoint restored into `target`'s structure.

  Args:
    mngr: `manager(...)`.
    target: a `TrainState` (or its `jax.eval_shape` abstract twin, with
      shardings) giving shapes, dtypes and placement.

  Returns:
    (state, step), or (None, None) when there is no usable checkpoint.

  Raises:
    ValueError: the checkpoint's parameter shapes differ from `target`'s (a
      changed model): one line naming both shapes.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      with reads_end_before_their_loop():
        check_shapes(mngr, step, target.params)
        check_phases(mngr, step, target.opt_state)
        restored = mngr.restore(
          step,
          args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(target.params)),
            train=ocp.args.StandardRestore(
              _abstract({"step": target.step, "opt_state": target.opt_state})
            ),
          ),
        )
    except ShapeMismatch:
      raise
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: try the previous one
      _set_aside(mngr, step, _reason(e))
      continue
    state = target.replace(
      step=restored.train["step"], params=restored.params, opt_state=restored.train["opt_state"]
    )
    if not all_finite((state.params, state.opt_state)):
      _set_aside(mngr, step, "non-finite values")
      continue
    return state, step
  return None, None


class ShapeMismatch(ValueError):
  """A checkpoint's parameters do not fit the model of the config."""


def _item_metadata(mngr, step: int, item: str):
  """The stored tree metadata of one item of checkpoint `step`, by its handler (the
  items are `StandardCheckpointHandler`'s): `mngr.item_metadata` reads every item's,
  the optimizer state's too (≈ 6× the time of the params')."""
  handler = ocp.StandardCheckpointHandler()
  try:
    return handler.metadata(mngr.directory / str(step) / item)
  finally:
    handler.close()


def check_shapes(mngr, step: int, abstract_params) -> None:
  """Raises `ShapeMismatch` naming the first parameter whose stored shape differs."""
  try:
    meta = _item_metadata(mngr, step, "params")
  except Exception:  # noqa: BLE001 - no metadata: the restore itself will say
    return
  if meta is None:
    return
  want = {
    jax.tree_util.keystr(k): v.shape
    for k, v in jax.tree_util.tree_leaves_with_path(abstract_params)
  }
  stored = {
    jax.tree_util.keystr(k): tuple(v.shape)
    for k, v in jax.tree_util.tree_leaves_with_path(meta)
    if hasattr(v, "shape")
  }
  for name, shape in want.items():
    if name not in stored:
      raise ShapeMismatch(
        f"checkpoint {step} in {mngr.directory} has no parameter {name} (the config's model "
        f"differs from the one it was trained with)"
      )
    if tuple(stored[name]) != tuple(shape):
      raise ShapeMismatch(
        f"parameter {name}: the config's model has shape {tuple(shape)}, checkpoint {step} in "
        f"{mngr.directory} has {tuple(stored[name])} (a different model config)"
      )
  extra = sorted(set(stored) - set(want))
  if extra:
    raise ShapeMismatch(
      f"checkpoint {step} in {mngr.directory} has parameters the config's model lacks: {extra[:3]}"
    )


def check_phases(mngr, step: int, opt_state) -> None:
  """Raises `ShapeMismatch` when checkpoint `step` holds optimizer states for other phases
  than `opt_state` (a config that added or dropped a phase): a config problem, not an
  unreadable checkpoint, so it must not be set aside."""
  try:
    meta = _item_metadata(mngr, step, "train")["opt_state"]
  except Exception:  # noqa: BLE001 - no metadata: the restore itself will say
    return
  stored, want = sorted(meta), sorted(opt_state)
  if stored != want:
    raise ShapeMismatch(
      f"checkpoint {step} in {mngr.directory} holds optimizer states for the phases {stored}, "
      f"the config trains {want} (a phase was added or dropped)"
    )


def restore_params(workdir: str, abstract_params, step: int | None = None) -> tuple[Any, int]:
  """The parameters of checkpoint `step` (default: the newest readable, finite one).

  Only the `params` item is read. `abstract_params`: `jax.ShapeDtypeStruct`s
  (with shardings where they matter), e.g. `from_config.abstract_params(config, mesh)`.

  Raises:
    FileNotFoundError: no checkpoint (or not `step`) in `workdir`.
    ValueError: the stored parameter shapes differ from the model's
      (`ShapeMismatch`), or every candidate is unreadable or non-finite.
  """
  mngr = manager(workdir, create=False)
  try:
    steps = sorted(mngr.all_steps(), reverse=True)
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(
          f"no checkpoint of step {step} in {directory(workdir)}; it has {sorted(steps)}"
        )
      steps = [step]
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory(workdir)}: train first")
    problems = []
    for s in steps:
      try:
        with reads_end_before_their_loop():
          check_shapes(mngr, s, abstract_params)
          params = mngr.restore(
            s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
          ).params
      except ShapeMismatch:
        raise
      except Exception as e:  # noqa: BLE001 - report and try the previous one
        problems.append(f"step {s}: {_reason(e)}")
        logging.warning(
          "checkpoint %s/%d unreadable, skipped: %s", directory(workdir), s, _reason(e)
        )
        continue
      if not all_finite(params):
        problems.append(f"step {s}: non-finite parameters")
        logging.warning(
          "checkpoint %s/%d has non-finite parameters, skipped", directory(workdir), s
        )
        continue
      return params, s
    raise ValueError(f"no usable checkpoint in {directory(workdir)}: {'; '.join(problems)}")
  finally:
    mngr.close()
