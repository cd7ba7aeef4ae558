"""TFDS builders of the datasets read from local files; importing the package registers them.

The synthetic people's builder lives in the library (`heatpose_jax.data.synthetic_dataset`),
which prepares it on demand. `heatpose_jax.data.datasets.data_source` reads any built
dataset without importing this package.
"""

from data_prep import coco_keypoints, flic, lsp, mpii  # noqa: F401
from heatpose_jax.data import synthetic_dataset  # noqa: F401
