"""MPII, the coarse model alone. Same arguments as mpii.py."""

from heatpose_jax.configs import mpii


def get_config(arg=None):
  return mpii.get_config(",".join(filter(None, [arg, "coarse_only"])))
