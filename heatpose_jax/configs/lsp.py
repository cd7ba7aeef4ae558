"""LSP-style photographs (the 400 real images of lsp400: 300 train / 100 test).

  python -m data_prep.build --dataset=lsp --manual_dir=LSP_DIR --data_dir=DATA
  python -m experiments.train --config=heatpose_jax/configs/lsp.py --workdir=...

Arguments as synthetic.py (tiny, pool, steps, standard, dropout, bf16).
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, **common.SHARED_ARGS)
  c = common.base_config()
  c.dataset = c.tfds_name = "lsp"
  common.apply_half_size(c)
  c.batch_size = 32
  common.set_steps(c, 3000, 1000, 1000)
  c.eval_every = 1000
  c.eval.normalizer = "torso_size"
  c.eval.thresholds = (0.05, 0.1, 0.2)
  if a.tiny:
    common.apply_tiny(c)
  common.finish(c, a)
  return c
