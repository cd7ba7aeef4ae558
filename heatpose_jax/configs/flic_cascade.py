"""FLIC, the full cascade (paper Fig. 11-12, Table 3). Same arguments as flic.py."""

from heatpose_jax.configs import flic


def get_config(arg=None):
  return flic.get_config(arg)
