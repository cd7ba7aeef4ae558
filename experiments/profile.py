r"""Where THE train step (and the cascade forward) spends its work and time, by
op category: convolutions forward and backward, pooling, LCN and pyramid,
upscale-and-add, crop gather and its scatter-add gradient, augmentation,
targets, optimizer, other (see studies/profile.py).

  python -m experiments.profile --output_dir=/tmp/prof                  # MPII 8x, bf16
  python -m experiments.profile --config=heatpose_jax/configs/flic.py:pool=8 --output_dir=D
  python -m experiments.profile --tiny --output_dir=/tmp/prof           # CPU smoke run
  python -m experiments.profile --targets=joint --notrace --output_dir=D   # FLOPs and bytes only
  python -m experiments.profile --reanalyze=DIR --output_dir=D  # again, from a run's saved files

Writes OUTPUT_DIR/profile.json and profile.md after every target, the
optimized HLO as OUTPUT_DIR/<target>.hlo.txt and the profiler's trace in
OUTPUT_DIR/trace_<target>/ (TensorBoard's profile plugin or Perfetto read it).
Compare two commits by running the same command at each.
"""

from absl import flags
from ml_collections import config_flags

from experiments import launch
from studies import profile

config_flags.DEFINE_config_file(
  "config", None, "A run's config (default: the paper's --model at --pool).", lock_config=False
)
_MODEL = launch.define_model_flags("CPU-sized model, batch and steps (tests).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Writes profile.json, profile.md, traces.")
_FORWARD_BATCH = flags.DEFINE_integer("forward_batch", 1, "Batch of the cascade forward.")
_TARGETS = flags.DEFINE_list(
  "targets", ["coarse", "joint", "cascade"], f"Of {', '.join(profile.TARGETS)}."
)
_STEPS = flags.DEFINE_integer("steps", 5, "Untraced, then traced calls (tiny: 2).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first (tiny: 1).")
_TRACE = flags.DEFINE_bool("trace", True, "Run under jax.profiler (else FLOPs and bytes only).")
_REANALYZE = flags.DEFINE_string(
  "reanalyze", "", "Run nothing: attribute a finished run's saved HLO and traces again."
)
flags.mark_flag_as_required("output_dir")


def main(argv):
  del argv
  launch.setup()
  if _REANALYZE.value:
    print(profile.format_markdown(profile.reanalyze(_REANALYZE.value, _OUTPUT_DIR.value)))
    return
  bad = set(_TARGETS.value) - set(profile.TARGETS)
  if bad or not _TARGETS.value:
    raise ValueError(f"--targets must be some of {profile.TARGETS}, got {_TARGETS.value}")
  if flags.FLAGS["config"].present:  # its dtype and batch unless given here
    config = launch.config()
    for flag, field in ((_MODEL.dtype, "dtype"), (_MODEL.train_batch, "batch_size")):
      if flags.FLAGS[flag.name].present:
        config[field] = flag.value
  else:
    config = _MODEL.config()
  report = profile.run_profile(
    config,
    _TARGETS.value,
    forward_batch=_FORWARD_BATCH.value,
    output_dir=_OUTPUT_DIR.value,
    command=launch.command_line("experiments.profile"),
    steps=launch.tiny_default(_STEPS, 2),
    warmup=launch.tiny_default(_WARMUP, 1),
    trace=_TRACE.value,
  )
  print("\n" + profile.format_markdown(report), flush=True)


if __name__ == "__main__":
  launch.run(main)
