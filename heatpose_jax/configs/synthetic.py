"""Synthetic people (the quick start and the precision studies).

  python -m experiments.train --config=heatpose_jax/configs/synthetic.py:tiny --workdir=...

Arguments: tiny (CPU-sized), pool=4|8|16, dataset config name (tfds=tiny|default|
noisy|distractor), steps=N scales the three phases to N steps in total,
standard (the Fig. 13 comparison cascade), dropout=spatial|standard|none,
bf16 (mixed precision).
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(
    arg, tiny=False, pool=8, tfds="", steps=0, standard=False, dropout="spatial", bf16=False
  )
  c = common.base_config()
  c.dataset = c.tfds_name = "synthetic"
  c.tfds_config = a.tfds
  common.apply_half_size(c)
  c.coarse_steps, c.fine_steps, c.joint_steps = 6000, 2000, 2000
  c.eval_every = 2000
  c.eval.normalizer = "head_size"
  c.eval.thresholds = (0.05, 0.1, 0.2, 0.5)
  c.eval.curve_max = 0.5
  if a.tiny:
    common.apply_tiny(c)
    c.tfds_config = a.tfds or "tiny"
    c.coarse_steps, c.fine_steps, c.joint_steps = 300, 150, 150
    c.eval_every = 1_000_000
    c.checkpoint_every = 200
    c.max_eval_examples = 0
  common.finish(c, a)
  return c
