"""FLIC, the coarse model alone (paper Fig. 9, Table 1). Same arguments as flic.py."""

from heatpose_jax.configs import flic


def get_config(arg=None):
  return flic.get_config(",".join(filter(None, [arg, "coarse_only"])))
