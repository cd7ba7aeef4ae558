"""TFDS builders of the datasets; importing the package registers them.

`tfds.builder("synthetic", data_dir=...)` needs this import;
`tfds.builder_from_directory(DATA_DIR/NAME/CONFIG/VERSION)` does not.
"""

from data_prep import flic, lsp, mpii, synthetic  # noqa: F401
