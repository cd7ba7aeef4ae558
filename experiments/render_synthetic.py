"""The synthetic-people renderer: a contact sheet with the labels drawn, and its speed.

python -m experiments.render_synthetic --preview=sheet.png --n=16 --size=128
python -m experiments.render_synthetic --benchmark --n=300 --size=64 [--distractor]
"""

from absl import flags

from experiments import launch
from studies import render_synthetic

# Each flag is the keyword argument of `render_synthetic.run` of the same name.
_FLAGS = (
  flags.DEFINE_string("preview", "", "Write a contact sheet PNG to this path."),
  flags.DEFINE_bool("benchmark", False, "Measure the rendering speed."),
  flags.DEFINE_integer("n", 200, "Examples (contact sheet or benchmark)."),
  flags.DEFINE_integer("size", 256, "Image height = width."),
  flags.DEFINE_integer("seed", 0, "Dataset seed of the contact sheet."),
  flags.DEFINE_bool("distractor", False, "Benchmark with a distractor in every image."),
)


def main(argv):
  del argv
  launch.setup()
  print("\n".join(render_synthetic.run(**{f.name: f.value for f in _FLAGS})))


if __name__ == "__main__":
  launch.run(main)
