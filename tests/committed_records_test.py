"""The committed CPU-study records stay matched by the configs that
`scripts/cpu_studies.sh` runs them with.

A record is reused only while its config digest equals the digest of the run
today's config would train (`studies/records.py`). A field added to the configs
without its neutral value in `records._DIGEST_NEUTRAL` un-matches every record,
and `cpu_studies.sh report` then rewrites the committed results without them
(it happened with `model.context_blocks` and `model.early_width`). Nothing is
trained or built here: the digests are computed from the configs alone.
"""

import json
from pathlib import Path

import pytest

from heatpose_jax.configs import synthetic
from studies import precision, regularization
from studies import runs as runs_lib

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# The config `cpu_studies.sh` gives p4n-paper and r1-r4 (p4, p4n, p8, p16 and the options' pieces: `cpu`).
SCRIPT_CONFIG = "cpu,schedule=paper"
# p4o, p8o, p16o, p4no and r1o-r4o's overrides (cpu_studies.sh's OPTIONS).
OPTIONS = {"model.context_blocks": 2, "model.head_norm": True}


def _records(directory: Path) -> list[dict]:
  recs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
  if not recs:
    pytest.skip(f"no committed records in {directory}")
  return recs


@pytest.mark.parametrize(
  "subdir, config, overrides",
  [
    ("precision_noise", SCRIPT_CONFIG, {}),  # p4n-paper
    ("", "cpu", {}),  # p4, p4n, p8, p16
    ("precision_options", "cpu", OPTIONS),  # p4o, p8o, p16o, p4no
  ],
)
def test_the_precision_records_match(subdir, config, overrides):
  base = runs_lib.apply_overrides(synthetic.get_config(config), overrides)
  for rec in _records(RESULTS / subdir / "precision_records"):
    plan = precision.Plan(
      base=base,
      workdir="/unused",
      geometry={"window_px": rec["window_px"]},
      noise_px=0.0,
      noise_canvas_px=rec["label_noise_px"],
      checkpoints_per_run=4,  # experiments/precision_study.py's default
      evals_per_run=8,
    )
    run = plan.run(rec["pool"], rec["group"], rec["seed_index"])
    assert plan.digest(run) == rec["config_digest"], rec["run"]


@pytest.mark.parametrize(
  "subdir, overrides",
  [
    ("", {}),  # r1, r2
    ("regularization_n100", {}),  # r3, r4
    ("regularization_options_n100", OPTIONS),  # r3o, r4o
    ("regularization_options", OPTIONS),  # r1o, r2o
  ],
)
def test_the_regularization_records_match(subdir, overrides, monkeypatch, tmp_path):
  # The small training set's builder config is named, not built.
  monkeypatch.setattr(regularization.datasets, "find_prepared", lambda *a, **k: "built")
  base = runs_lib.apply_overrides(synthetic.get_config(SCRIPT_CONFIG), overrides)
  for rec in _records(RESULTS / subdir / "regularization_records"):
    plan = regularization.plan_study(
      runs_lib.apply_overrides(base, {"data_dir": str(tmp_path)}),
      str(tmp_path),
      num_train=rec["num_train"],
      evals_per_run=regularization.EVALS_PER_RUN,
      checkpoints_per_run=2,  # experiments/regularization_study.py's default
    )
    run = plan.run(rec["group"], rec["seed_index"])
    assert plan.digest(run) == rec["config_digest"], rec["run"]
