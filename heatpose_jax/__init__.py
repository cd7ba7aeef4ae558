"""heatpose_jax: Tompson et al., Efficient Object Localization Using Convolutional
Networks (CVPR 2015), in JAX/Flax.

    from heatpose_jax import Predictor
    result = Predictor.from_workdir("workdir/quickstart")("photo.jpg")

The packages (core, data, model, evaluation, mrf, training, under the entry
points that read a config) and the import direction are in docs/design.md.
"""

__version__ = "0.2.0"
__all__ = ["Predictor"]


def __getattr__(name):
  # Lazy: `import heatpose_jax` stays cheap (no JAX) for the builders and scripts.
  if name == "Predictor":
    from heatpose_jax.predictor import Predictor

    return Predictor
  raise AttributeError(f"module 'heatpose_jax' has no attribute {name!r}")
