"""COCO-format person keypoints, top-down on person boxes (docs/coco.md).

  python -m data_prep.build --dataset=coco_keypoints --config=coco \
    --annotations=train=person_keypoints_train2017.json \
    --annotations=validation=person_keypoints_val2017.json --images=DIR --data_dir=D
  python -m experiments.train --config=heatpose_jax/configs/coco.py --workdir=W \
    --config.data_dir=D
  python -m experiments.train --config=heatpose_jax/configs/coco.py:tiny --workdir=W \
    --config.data_dir=D --config.tfds_config=generic      # any COCO-format build

256×192 (h × w) person crops: each annotation's box, widened to the build's 3:4
aspect, times the 1.25 margin fills the canvas (crop mode 'box', as HRNet and the
simple baselines crop); the paper's 8× pooling (a 32×24 heat-map), the MPII bank
and the cascade; HRNet's augmentation (±40°, scale 0.65–1.35, flips); PCK by the
torso and OKS AP on the ground-truth boxes in training and `experiments.evaluate`
(`config.evals.oks`, `evaluators/oks.py`), OKS AP of detections' boxes from
`experiments.predict --boxes` and `experiments.evaluate_predictions --dataset=coco`. The joints are the build's
(its stored spec); `tfds` names the builder config (coco, crowdpose, generic), the
splits are `train_split` / `eval_split` (default train / validation).

Arguments: tiny (64×48 crops, CPU seconds), tfds, pool, steps, standard, dropout, bf16.
"""

from heatpose_jax.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, **common.SHARED_ARGS, tfds="coco")
  c = common.base_config()
  c.dataset = "coco"  # every COCO-format build; its joints come from the build
  c.tfds_name = "coco_keypoints"
  c.tfds_config = a.tfds
  c.train_split, c.eval_split = "train", "validation"
  c.crop_mode = "box"
  c.box_scale = 1.25
  c.input_hw = (256, 192)
  c.model.variant = "mpii"
  c.model.pool_factor = 8
  c.augment.rotation = 40.0
  c.augment.scale = (0.65, 1.35)
  c.batch_size = 32  # as mpii.py (one MPII-size step ≈ 26 GB at 256×256)
  common.set_steps(c, 60_000, 15_000, 15_000)
  c.eval_every = 5_000
  c.max_eval_examples = 2_000
  c.eval.normalizer = "torso_size"
  c.eval.thresholds = (0.05, 0.1, 0.2)
  # OKS AP / AR (pycocotools) of the same prediction pass: eval/oks/cascade/AP, ...;
  # sigmas '' = by the joint names (COCO's 17, CrowdPose's 14, else per part).
  c.evals.oks = dict(type="oks", sigmas="")
  if a.tiny:
    common.apply_tiny(c)
    c.input_hw = (64, 48)  # the 3:4 aspect of the build's boxes
  common.finish(c, a)
  return c
