"""Prints parameter counts and forward GFLOP per image of the paper's models.

python -m experiments.model_stats
"""

from absl import app

from heatpose_jax import model_stats


def main(argv):
  del argv
  print(model_stats.format_table(model_stats.paper_table()))


if __name__ == "__main__":
  app.run(main)
