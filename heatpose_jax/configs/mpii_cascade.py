"""MPII, the full cascade, scale-normalized by default (`unnormalized` for Table
4's second model). Same arguments as mpii.py."""

from heatpose_jax.configs import mpii


def get_config(arg=None):
  return mpii.get_config(arg)
