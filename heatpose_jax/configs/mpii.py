"""MPII (paper Table 4, Fig. 16): 256x256 crops, 16 joints, PCKh.

  python -m data_prep.build --dataset=mpii --manual_dir=MPII_DIR --data_dir=DATA
  python -m experiments.train --config=heatpose_jax/configs/mpii.py --workdir=...

Arguments: unnormalized (train at the photographs' own scale, Table 4's second
model), coarse_only, pool=4|8|16, standard, dropout=..., steps=N, bf16, tiny.
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, **common.SHARED_ARGS, coarse_only=False, unnormalized=False)
  c = common.base_config()
  c.dataset = c.tfds_name = "mpii"
  c.eval_split = "validation"  # Tompson et al.'s 2958 people; the test split has no labels
  c.crop_mode = "unnormalized" if a.unnormalized else "scale_normalized"
  c.input_hw = (256, 256)
  c.model.variant = "mpii"
  c.model.pool_factor = 4
  c.eval.normalizer = "head_size"
  c.eval.thresholds = (0.1, 0.2, 0.3, 0.4, 0.5)
  c.eval.curve_max = 0.5
  if a.tiny:
    common.apply_tiny(c)
  common.finish(c, a)
  return c
