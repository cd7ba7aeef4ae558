"""One writer per directory: an exclusive `flock` on a lock file inside it.

`experiments.train` holds `WORKDIR/train.lock` for the whole run and
`python -m data_prep.build` holds `DATA_DIR/build.lock` for the whole build, so a
second writer stops at once with one line naming the directory and the holder's
PID instead of deleting the first one's temporary checkpoint directories or
interleaving its metrics. Readers (evaluate, predict, `Predictor`) take no lock.

The lock is the kernel's, on an open file: it goes away with the process that
holds it, however that process ends (SIGKILL included), so a lock file left
behind by a dead run is never stale; the file itself stays and only says who
held it last. Where the file system cannot lock (some network or FUSE mounts) a
warning says so and the run goes on unprotected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time

TRAIN_LOCK = "train.lock"
BUILD_LOCK = "build.lock"


class InUse(RuntimeError):
  """Another process holds the directory's lock (the message names it and its PID)."""


def _holder(path: str) -> str:
  """What the lock file says about its holder ('pid 123 on host h, since ...')."""
  for _ in range(20):  # the holder writes its PID just after taking the lock
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      text = ""
    if text:
      return text
    time.sleep(0.05)
  return "pid unknown"


@contextlib.contextmanager
def hold(directory: str, name: str, *, what: str, wait: bool = False):
  """Holds an exclusive lock on `directory/name` for the `with` block.

  Args:
    directory: the directory to guard (created if missing).
    name: the lock file's name, e.g. `TRAIN_LOCK`.
    what: how a refusal names the directory, e.g. '--workdir=runs/a'.
    wait: wait for the holder to finish instead of refusing.

  Raises:
    InUse: another process holds the lock (and not `wait`).
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, name)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    if _lock(fd, path, what, wait):
      os.ftruncate(fd, 0)
      stamp = time.strftime("%Y-%m-%d %H:%M:%S")
      os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {stamp}\n".encode())
    yield
  finally:
    os.close(fd)  # releases the lock; the file stays (removing it would race with a waiter)


def _lock(fd: int, path: str, what: str, wait: bool) -> bool:
  """Takes the lock on `fd`; False where the file system cannot lock."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    holder = _holder(path)
    if not wait:
      raise InUse(
        f"{what} is in use by another process ({holder}; lock {path}): wait for it to "
        "finish or stop it, or use another directory"
      ) from None
    logging.warning("%s is in use (%s): waiting for it", what, holder)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True
  except OSError as e:
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      raise
    logging.warning(
      "%s: cannot lock %s (%s); not protected against a second writer", what, path, e.strerror
    )
    return False
