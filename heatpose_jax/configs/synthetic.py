"""Synthetic people (the quick start and the precision studies).

  python -m experiments.train --config=heatpose_jax/configs/synthetic.py:tiny --workdir=...

Arguments: tiny (CPU-sized), cpu (the CPU study geometry, below), paper (the
paper's geometry, below), pool=4|8|16,
dataset config name (tfds=tiny|small|default|noisy|distractor), steps=N scales the
three phases to N steps in total, standard (the Fig. 13 comparison cascade),
dropout=spatial|standard|none, bf16 (mixed precision), noise=σ (annotation noise
in canvas px on the training labels; evaluation scores the clean ones),
schedule=paper (with tiny or cpu: the paper's three phases instead of their
`common.joint_schedule`; the other configs have the paper's).

The default is a half-size model on 128×128 person crops (torso ≈ 40 px). `paper`
is FLIC's geometry at the network input: 256×256 crops of the 256×256 renders,
torso (‖r_shoulder − l_hip‖) ≈ 80 px, the paper's full-width model with its
36-px crop window, 8× pooling: a GPU configuration.

`cpu` is the paper's proportions at a size two CPU cores train in minutes (the
studies' CPU geometry, docs/studies.md): 128×128 'extent' crops of the 256×256
renders zoomed to torso ≈ 43 px, 4× pooling (a 4-px cell ≈ 0.09 torso; the
paper's 8 px / 80), a 20-px fine window (≈ 0.47 torso; the paper's 36 / 80), the
paper's σ (1.5 heat-map px coarse, 1.5 input px fine), the tiny model's widths.
"""

import ml_collections

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(
    arg, **common.SHARED_ARGS, cpu=False, paper=False, tfds="", noise=0.0, schedule=""
  )
  if a.schedule not in ("", "paper"):
    raise ValueError(f"config argument schedule={a.schedule!r}: use schedule=paper or leave it out")
  c = common.base_config()
  c.dataset = c.tfds_name = "synthetic"
  c.tfds_config = a.tfds
  common.apply_half_size(c)
  common.set_steps(c, 6000, 2000, 2000)
  c.eval_every = 2000
  c.eval.normalizer = "head_size"
  c.eval.thresholds = (0.05, 0.1, 0.2, 0.5)
  c.eval.curve_max = 0.5
  c.label_noise = a.noise
  if a.paper:
    c.input_hw = (256, 256)  # 'extent' crops of the 256×256 renders: torso ≈ 80 px
    c.model.width = 1.0
    c.model.head_features = (256, 256)
    c.model.fine_convs = ((7, 64), (5, 128))
    c.model.fine_merge_features = 128
    c.model.context = 36
    common.set_steps(c, 8000, 3000, 3000)
    c.eval_every = 1000
  if a.tiny:
    _quick_start(c, a.tfds, paper_schedule=a.schedule == "paper")
  if a.cpu:
    common.apply_tiny(c)
    c.tfds_config = a.tfds  # the 256×256 renders
    c.input_hw = (128, 128)
    c.box_scale = 0.9  # 'extent' boxes of 0.9 × 1.25 × the joint extent: torso ≈ 43 px
    c.model.variant = "flic"
    c.model.pool_factor = 4
    c.model.context = 20
    c.model.sigma_coarse = 1.5
    c.model.sigma_fine = 1.5
    if a.schedule == "paper":
      common.set_steps(c, 1200, 400, 400)
    else:  # σx ratio 0.78 → 0.70, PCK@0.05 +7 (docs/training.md, "Eighth round").
      common.joint_schedule(c, 1200, 800)
    c.eval_every = 400
    c.checkpoint_every = 400
    c.max_eval_examples = 0
  common.finish(c, a)
  return c


def _quick_start(c: ml_collections.ConfigDict, tfds: str, paper_schedule: bool) -> None:
  """The `tiny` argument: the quick start's CPU run (README)."""
  common.apply_tiny(c)
  c.tfds_config = tfds or "tiny"
  # The FLIC bank: one conv at the coarsest level, where the MPII bank's five
  # learn slowly on a 16×16 map (docs/training.md, "Why learning stalled").
  c.model.variant = "flic"
  c.phases.coarse.learning_rate = c.phases.fine.learning_rate = 3e-3
  # Flips only: the renderer already draws every figure at its own scale, pose and
  # place, and in ~8 epochs nothing over-fits; rotating and scaling on top only
  # slowed learning (cascade PCKh@0.5 +3 to +5 without them, two seeds;
  # docs/training.md, "Third round").
  c.augment.rotation, c.augment.scale = 0.0, (1.0, 1.0)
  # The cascade keeps the fine peak the coarse maps support: the fine net alone
  # broke 1 in 10 of the correct coarse estimates, often jumping to the other limb
  # (+1.8 to +2.2 PCKh@0.5 on three runs, better at every α; docs/model.md).
  c.eval.fuse_coarse = True
  # GroupNorm in the head too: without it a third to a half of its first layer's
  # 32 units died in every run, and in one of six 2,400-step runs both ankle maps
  # became the same map (docs/training.md, "Eleventh round").
  c.model.head_norm = True
  # Image-level features scale and shift the first head layer: a 1x1 head cannot see
  # which way a figure faces, and the figures seen from the back swapped a third of
  # their joints (+2.5 PCKh@0.5 at 2,400 steps, +1.4 on a held-out render, 3 seeds;
  # docs/training.md, "Fourteenth round").
  c.model.global_context = True
  # No frozen-coarse phase (+3.7 PCKh@0.5 on a held-out render at 2,400 steps,
  # 3 seeds; docs/training.md, "Eighth round: no frozen-coarse phase").
  if paper_schedule:
    common.set_steps(c, 1000, 250, 250)
  else:
    common.joint_schedule(c, 1000, 500)
  c.eval_every = 1_000_000
  c.checkpoint_every = 500
  c.max_eval_examples = 0
