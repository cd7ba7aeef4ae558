"""FLIC (paper §5): 320x240 torso-centred frames, 7 joints, PCK with the torso.

  python -m data_prep.build --dataset=flic --manual_dir=FLIC_DIR --data_dir=DATA
  python -m experiments.train --config=heatpose_jax/configs/flic.py --workdir=...

Arguments: coarse_only (the coarse model alone), pool=4|8|16, standard,
dropout=..., steps=N, bf16, tiny, protocol=modec|hourglass|observer_centric.

`flic_protocol` (default `modec`, the FLIC authors' own evaluation: arms of
backward-facing people flipped, torso ‖lsho − rhip‖) sets the training labels,
the torso normalizer of in-training and offline evaluation, and the name printed
beside every FLIC number (docs/protocols.md). Train and score with the same one.
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, **common.SHARED_ARGS, coarse_only=False, protocol="modec")
  c = common.base_config()
  c.dataset = c.tfds_name = "flic"
  c.flic_protocol = a.protocol
  c.crop_mode = "torso"
  c.input_hw = (240, 320)
  c.model.variant = "flic"
  c.eval.normalizer = "torso_size"
  c.eval.thresholds = (0.05, 0.1, 0.15, 0.2)
  c.eval.curve_max = 0.2
  if a.tiny:
    common.apply_tiny(c)
    c.input_hw = (48, 64)
  common.finish(c, a)
  return c
