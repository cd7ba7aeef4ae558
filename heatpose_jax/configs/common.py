"""The defaults every config starts from, and the `arg` parser of `get_config`.

Configs are read only by the top-level `train_and_evaluate` / `evaluate` (and the
experiment launchers); library functions take explicit arguments.
"""

from __future__ import annotations

import ml_collections

# The arguments every dataset config takes (`finish` applies them).
SHARED_ARGS = dict(tiny=False, pool=0, steps=0, standard=False, dropout="", bf16=False)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'tiny,pool=4,steps=100'-style config arguments (big_vision's idea).

  A bare name sets a boolean default to True; `key=value` converts `value` to the
  type of the default. Unknown keys are an error naming the key.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not value:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value)
  return out


def phase(
  steps: int,
  train: tuple[str, ...],
  loss_weights: tuple[float, float],
  learning_rate: float,
  *,
  warmup_steps: int = 200,
  weight_decay: float = 0.0,
  grad_clip: float = 1.0,
) -> ml_collections.ConfigDict:
  """One entry of `config.phases` (the fields of `train_step.Phase` but its name):
  the parameter groups it trains, its loss w1·E1 + w2·E2, its AdamW."""
  return ml_collections.ConfigDict(
    dict(
      steps=steps,
      train=tuple(train),
      loss_weights=tuple(loss_weights),
      learning_rate=learning_rate,
      warmup_steps=warmup_steps,
      weight_decay=weight_decay,
      grad_clip=grad_clip,
    )
  )


def set_steps(c: ml_collections.ConfigDict, *steps: int) -> None:
  """Sets the steps of `c.phase_order`'s phases, in order."""
  if len(steps) != len(c.phase_order):
    raise ValueError(f"{len(steps)} step counts for the phases {tuple(c.phase_order)}")
  for name, n in zip(c.phase_order, steps, strict=True):
    c.phases[name].steps = n


def joint_schedule(c: ml_collections.ConfigDict, coarse: int, joint: int) -> None:
  """No frozen-coarse phase: after `coarse` steps of the coarse model alone, both
  nets train `joint` steps together at the coarse phase's rate on E1 + E2 (λ = 1).
  The paper's fine phase (the coarse model frozen) and joint phase (λ = 0.1 at a
  fine-tuning rate) suit a converged coarse model; at a budget where its loss still
  falls they cost more than they protect (docs/training.md, "Eighth round")."""
  set_steps(c, coarse, 0, joint)
  c.phases.joint.learning_rate = c.phases.coarse.learning_rate
  c.phases.joint.loss_weights = (1.0, 1.0)


def base_config() -> ml_collections.ConfigDict:
  """Fields shared by every dataset; dataset configs override them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data: a TFDS dataset built by `python -m data_prep.build`.
  c.dataset = "synthetic"  # a registered dataset (heatpose_jax.data.dataset_specs.SPECS)
  c.dataset_module = ""  # module(s) imported first, which `register` c.dataset (not a library one)
  c.tfds_name = "synthetic"
  c.tfds_config = ""  # builder config name, "" for the default
  c.data_dir = ""  # "" -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.train_split = "train"
  c.eval_split = "test"
  c.crop_mode = "extent"
  c.input_hw = (256, 256)
  c.image_scale = 0.0  # 0: the crop mode's default
  c.box_scale = 0.0
  c.canvas_cache = False  # crop once into .npy canvases beside the workdir
  c.worker_count = 0
  c.max_eval_examples = 0  # 0: the whole split
  # σ (canvas px) of Gaussian annotation noise added to the training labels, fixed
  # per example; evaluation scores against the clean labels (eval.clean_labels).
  c.label_noise = 0.0

  c.model = model_config()

  c.augment = augment_config()

  c.batch_size = 32  # global
  c.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'
  # Training phases, run in `phase_order` (a phase with 0 steps is skipped). Each
  # is data (`phase` below; `train_step.Phase`): the paper's three (§4.2) are
  # coarse on E1; fine (coarse frozen) on E2; both on E3 = E1 + λ·E2, λ = 0.1.
  c.phase_order = ("coarse", "fine", "joint")
  c.phases = ml_collections.ConfigDict()
  c.phases.coarse = phase(20_000, ("coarse",), (1.0, 0.0), 1e-3)
  c.phases.fine = phase(5_000, ("fine",), (0.0, 1.0), 1e-3)
  c.phases.joint = phase(5_000, ("coarse", "fine"), (1.0, 0.1), 2e-4)

  c.log_every = 50
  c.eval_every = 2_000
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 3
  c.init_from = ""  # a checkpoint directory (or workdir) to start from

  c.eval = eval_config()
  # More evaluators over the same prediction pass, after the headline above
  # (`config.eval`: its PCK/PCKh tables, curves and σ), e.g.
  #   c.evals.pck_torso = dict(type="pck", normalizer="torso_size", thresholds=(0.2,))
  # `type`: a module of heatpose_jax.evaluation.evaluators or a dotted module path; the rest
  # are its `evaluate` arguments. Scalars `NAME/...`; results.json "evals": {NAME: ...}.
  c.evals = ml_collections.ConfigDict()

  c.spatial_model = ml_collections.ConfigDict()
  c.spatial_model.enabled = False
  c.spatial_model.steps = 500
  c.spatial_model.learning_rate = 1e-2
  return c


def augment_config() -> ml_collections.ConfigDict:
  """`config.augment`: the device augmentation of the training batches."""
  a = ml_collections.ConfigDict()
  a.rotation = 20.0
  a.scale = (0.5, 1.5)
  a.flip = 0.5
  # σ, in coarse heat-map cells, of Gaussian offsets added in training to the coarse
  # estimates that place the fine windows, so the fine model also learns joints
  # away from its window's centre, where the coarse model's test errors put them
  # (DeepPose's simulated stage-1 errors). 0: the paper, windows at the argmax.
  a.window_jitter = 0.0
  return a


def model_config() -> ml_collections.ConfigDict:
  """`config.model`: the paper's MPII cascade (`from_config.model` builds it)."""
  m = ml_collections.ConfigDict()
  m.variant = "mpii"  # coarse bank layout: 'flic' or 'mpii'
  m.pool_factor = 8
  m.width = 1.0
  m.head_features = (256, 256)
  # Not in the paper (0, 0.0: its model; docs/model.md, "Context blocks and early width"):
  m.early_width = 0.0  # width of the first two bank convs (the crop features); 0: width
  m.context_blocks = 0  # residual 3x3 blocks after the merge
  m.global_context = False  # image-level features scale and shift the first head layer
  m.fine_convs = ((7, 64), (5, 128))
  m.fine_merge_features = 128
  m.context = 36
  m.dropout = "spatial"
  m.dropout_rate = 0.2
  m.norm = "none"  # 'group': GroupNorm after every coarse bank conv (not in the paper)
  m.head_norm = False  # GroupNorm after the head's 1x1 convs too (not in the paper)
  m.standard_cascade = False
  m.sigma_coarse = 1.5  # target sigma, heat-map pixels
  m.sigma_fine = 1.5  # target sigma, input pixels
  return m


def eval_config() -> ml_collections.ConfigDict:
  """`config.eval`: the headline evaluation (PCK / PCKh tables, curves, σ)."""
  e = ml_collections.ConfigDict()
  e.normalizer = "torso_size"  # or 'head_size' (PCKh)
  e.thresholds = (0.05, 0.1, 0.2)
  e.curve_max = 0.2
  e.coarse_refine = False  # the paper's coarse estimate is the argmax
  # Flip test: average each image's estimate with its mirror's (HRNet's, mmpose's
  # test-time flip; 2x the evaluation's compute). Not in the paper.
  e.flip_test = False
  # The cascade's refined location: the peak of the fine maps weighted by the coarse
  # maps in the window (docs/model.md, "Fusing the coarse maps"); False: the fine
  # maps' peak alone (the paper).
  e.fuse_coarse = False
  e.clean_labels = True  # score against `joints_clean` where a dataset has them
  return e


def apply_half_size(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """128x128 person crops and a half-width MPII-layout model (synthetic, LSP):
  the paper's architecture at a quarter of its compute per image."""
  c.crop_mode = "extent"
  c.input_hw = (128, 128)
  c.model.variant = "mpii"
  c.model.width = 0.5
  c.model.head_features = (128, 128)
  c.model.fine_convs = ((7, 32), (5, 64))
  c.model.fine_merge_features = 64
  c.model.context = 24
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a CPU run of seconds to minutes (big_vision's runlocal).

  The geometry follows the 64-px canvas rather than the paper's 256 px
  (docs/training.md, "Why learning stalled"): 4× pooling keeps a heat-map cell at
  4 px ≈ 0.2 torso (8× made it 8 px ≈ 0.4 torso, an 8×8 map). The coarse target
  σ keeps the paper's proportion, 0.15 torso (1.5 cells of 8 px at an 80-px
  torso): 0.75 cells at the quick start's 19-px torso. The fine σ, the paper's
  1.5 px at an 80-px torso, would be 0.36 px here: 1 px. GroupNorm after every
  coarse bank conv (not in the paper) and no dropout, milder scale/rotation for a
  budget of hundreds of steps, where nothing over-fits. The bank layout stays the
  config's (the synthetic quick start picks the FLIC bank).
  """
  c.input_hw = (64, 64)
  c.model.update(
    pool_factor=4,
    sigma_coarse=0.75,
    sigma_fine=1.0,
    norm="group",
    width=1 / 8,
    head_features=(32, 32),
    fine_convs=((5, 16), (3, 32)),
    fine_merge_features=32,
    context=16,
    dropout="none",
  )
  c.augment.rotation = 15.0
  c.augment.scale = (0.8, 1.25)
  c.batch_size = 16
  set_steps(c, 30, 20, 20)
  for p in c.phases.values():
    p.warmup_steps = 5
  c.phases.coarse.learning_rate = c.phases.fine.learning_rate = 2e-3
  c.log_every = 10
  c.eval_every = 1_000_000  # evaluate at the end only
  c.checkpoint_every = 20
  c.max_eval_examples = 64
  return c


def finish(c: ml_collections.ConfigDict, a: ml_collections.ConfigDict) -> None:
  """Applies the arguments every config shares (see `parse_arg` callers)."""
  if a.get("pool"):  # 0: the config's own
    c.model.pool_factor = a.pool
  if a.get("steps"):
    total = sum(p.steps for p in c.phases.values())
    for p in c.phases.values():
      p.steps = round(p.steps * a.steps / total)
  if a.get("standard"):
    # Fig. 13's comparison: image-patch fine model, trained greedily (no phase 3).
    c.model.standard_cascade = True
    c.phases.fine.steps += c.phases.joint.steps
    c.phases.joint.steps = 0
  if a.get("dropout"):  # "": the config's own
    c.model.dropout = a.dropout
  if a.get("bf16"):
    c.dtype = "bfloat16"
  if a.get("coarse_only"):
    c.phases.fine.steps = c.phases.joint.steps = 0
