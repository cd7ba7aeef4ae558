"""The devices: the data-parallel mesh and the placement of host batches on it.

One mesh per run, built by the top-level entry point (`make_mesh`) and passed
down; each host's rows become one global array (`to_global_array`).
docs/training.md, "Devices: the mesh and data parallelism".
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: Sequence[jax.Device] | None = None, data_axis: str = "data") -> Mesh:
  """The 1-D data-parallel mesh over `devices` (default: every device of every host).

  Built once per run by the top-level entry point and passed down.
  """
  return Mesh(np.array(jax.devices() if devices is None else devices), (data_axis,))


def to_global_array(
  batch: dict[str, np.ndarray], mesh: Mesh, data_axis: str = "data"
) -> dict[str, jax.Array]:
  """Places a host-local batch on the mesh, batch axis sharded over `data_axis`.

  Works single- and multi-host: each host passes its own (B / P, ...) rows and the
  result is a global (B, ...) array.

  Args:
    batch: dict of host-local numpy arrays, leading axis the local batch.
    mesh: the device mesh.
    data_axis: mesh axis for the batch dimension.

  Returns:
    dict of global `jax.Array`s with `NamedSharding(mesh, P(data_axis))`.
  """
  sharding = NamedSharding(mesh, PartitionSpec(data_axis))
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }
