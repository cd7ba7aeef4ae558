"""Process set-up shared by the launchers: multi-host initialization and logging."""

import os

import jax
from absl import flags, logging

flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() first (multi-host: SLURM, TPU pods, or "
  "--coordinator_address/--num_processes/--process_id).",
)
flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-host without SLURM)."
)
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host without SLURM).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host without SLURM).")
flags.DEFINE_string("cpu_collectives", None, "'gloo' for multi-process CPU runs.")


def setup() -> None:
  """Initializes the distributed runtime when asked and says what devices there are."""
  f = flags.FLAGS
  if f.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", f.cpu_collectives)
  if f.distributed or f.coordinator_address:
    jax.distributed.initialize(
      coordinator_address=f.coordinator_address,
      num_processes=f.num_processes,
      process_id=f.process_id,
    )
  logging.info(
    "process %d/%d, %d local / %d global devices (%s), pid %d",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
    os.getpid(),
  )
