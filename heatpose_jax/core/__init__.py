"""The ground floor: atomic file writes and JSON-lines reads (`fileio`), where a
command may write (`outputs`), the device mesh (`sharding`), one writer per
directory (`workdir_lock`). Imports nothing of heatpose_jax (docs/design.md, "Packages").
"""
