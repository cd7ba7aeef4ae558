"""A user's evaluator, outside the library (tests/evaluators_test.py): the mean
pixel error of each estimate over the annotated joints, canvas frame.

  config.evals.toy = dict(type="tests.toy_evaluator", scale=1.0)

Nothing in heatpose_jax names it: the dotted path in the config is imported by
whichever process evaluates.
"""

import numpy as np

from heatpose_jax.evaluation import evaluators


def evaluate(preds, *, skeleton, pools, scale=1.0):
  """{"num_examples", and for each estimate m: m: scale × mean ‖pred − gt‖ (px)}."""
  del skeleton, pools
  valid = preds["joints_valid"] > 0
  result = {"num_examples": int(valid.shape[0])}
  for m in evaluators.estimates(preds):
    err = np.linalg.norm(preds[m] - preds["joints"], axis=-1)
    result[m] = float(scale * err[valid].mean())
  return result


def scalars(result):
  for m in evaluators.estimates(result):
    yield f"{m}/mean_px_error", result[m]


def format_table(result):
  rows = "\n".join(f"{m:8s} {result[m]:.2f}" for m in evaluators.estimates(result))
  return f"mean pixel error (px), {result['num_examples']} examples\n{rows}"
