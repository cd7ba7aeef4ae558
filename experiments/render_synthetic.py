"""The synthetic-people renderer: a contact sheet with the labels drawn, and its speed.

python -m experiments.render_synthetic --preview=sheet.png --n=16 --size=128
python -m experiments.render_synthetic --benchmark --n=300 --size=64 [--distractor]
"""

from absl import flags

from experiments import launch
from studies import render_synthetic

_PREVIEW = flags.DEFINE_string("preview", "", "Write a contact sheet PNG to this path.")
_BENCHMARK = flags.DEFINE_bool("benchmark", False, "Measure the rendering speed.")
_N = flags.DEFINE_integer("n", 200, "Examples (contact sheet or benchmark).")
_SIZE = flags.DEFINE_integer("size", 256, "Image height = width.")
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed of the contact sheet.")
_DISTRACTOR = flags.DEFINE_bool("distractor", False, "Benchmark with a distractor in every image.")


def main(argv):
  del argv
  launch.setup()
  lines = render_synthetic.run(
    preview=_PREVIEW.value,
    benchmark=_BENCHMARK.value,
    n=_N.value,
    size=_SIZE.value,
    seed=_SEED.value,
    distractor=_DISTRACTOR.value,
  )
  print("\n".join(lines))


if __name__ == "__main__":
  launch.run(main)
