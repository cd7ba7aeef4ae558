"""LSP-style photographs (the 400 real images of lsp400: 300 train / 100 test).

  python -m data_prep.build --dataset=lsp --manual_dir=LSP_DIR --data_dir=DATA
  python -m experiments.train --config=heatpose_jax/configs/lsp.py --workdir=...

Arguments as synthetic.py (tiny, pool, steps, standard, dropout, bf16).
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(
    arg, tiny=False, pool=8, steps=0, standard=False, dropout="spatial", bf16=False
  )
  c = common.base_config()
  c.dataset = c.tfds_name = "lsp"
  c.crop_mode = "extent"
  c.input_hw = (128, 128)
  c.model.variant = "mpii"
  c.model.width = 0.5
  c.model.head_features = (128, 128)
  c.model.fine_convs = ((7, 32), (5, 64))
  c.model.fine_merge_features = 64
  c.model.context = 24
  c.batch_size = 32
  c.coarse_steps, c.fine_steps, c.joint_steps = 3000, 1000, 1000
  c.eval_every = 1000
  c.eval.normalizer = "torso_size"
  c.eval.thresholds = (0.05, 0.1, 0.2)
  if a.tiny:
    common.apply_tiny(c)
  common.finish(c, a)
  return c
