"""Prints parameter counts and GFLOP per image of the paper's models (nothing is
compiled; FLOPs from XLA's cost analysis of the lowered module, else counted
from the jaxpr, see heatpose_jax/model/model_stats.py).

  python -m experiments.model_stats [--pools=4,8,16]
"""

from absl import flags

from experiments import launch
from heatpose_jax.model import model_stats

_POOLS = flags.DEFINE_list("pools", ["4", "8", "16"], "Pooling factors.")


def main(argv):
  del argv
  launch.setup()
  print(model_stats.format_stats(model_stats.paper_table([int(p) for p in _POOLS.value])))


if __name__ == "__main__":
  launch.run(main)
