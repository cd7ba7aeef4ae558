"""What a training loop is made of: the phases and THE train step (`train_step`),
checkpoints (`checkpoints`), metrics on disk (`metric_writer`). The loop itself,
which reads the config, is `heatpose_jax.train`. Imports `data`, `model`, `core`
(docs/design.md, "Packages").
"""
