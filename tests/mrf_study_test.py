"""The MRF person-selection study (studies/mrf_study.py) on `tiny_data`: it
trains the cascade, fits the MRF for both views and writes a finite table,
figures and the image view's MRF."""

import json

import jax
import numpy as np
import pytest

from heatpose_jax import from_config
from heatpose_jax.core import sharding
from studies import mrf_study


def test_study_trains_fits_and_writes_finite_table(tiny_config, tmp_path):
  # One coarse step: the fine stage keeps its initial weights, which is all the
  # wiring needs (the refinement runs either way).
  config = tiny_config(steps=(1, 0, 0), **{"spatial_model.steps": 2})
  work = tmp_path / "work"
  summary = mrf_study.run_study(
    config, str(work), num_overlays=2, mesh=sharding.make_mesh(jax.devices()[:1])
  )
  out = work / "mrf_study"
  assert json.loads((out / "table.json").read_text()) == summary
  test = from_config.dataset_source(config, config.eval_split)
  with_distractor = sum(bool(test[i]["has_distractor"]) for i in range(config.max_eval_examples))
  assert with_distractor > 0  # tiny_data: half of the images have one
  assert set(summary["views"]) == {"person", "image"} and summary["step"] == 1
  for view in summary["views"].values():
    assert view["num_examples"] == config.max_eval_examples
    assert view["num_with_distractor"] == with_distractor and view["num_joints"] > 0
    assert np.isfinite(view["mrf_loss"])
    assert set(view["rows"]) == {"coarse", "cascade", "coarse_mrf", "cascade_mrf"}
    for row in view["rows"].values():
      assert 0 <= row["right_person"] <= 100 and 0 <= row["on_distractor"] <= 100
      assert set(row["pck"]) == {str(t) for t in config.eval.thresholds}
      assert all(np.isfinite(v) for v in row["pck"].values())
  md = (out / "table.md").read_text()
  assert "cascade+MRF" in md and "right person" in md and "view: image" in md
  for name in ("figure.png", "overlays.png", "image_view/spatial_model/mrf.npz"):
    assert (out / name).stat().st_size > 1000, name
  # The person view's MRF is the one training fitted and saved in the workdir.
  assert (work / "spatial_model" / "mrf.npz").exists()


def test_study_rejects_unknown_views(tiny_config, tmp_path):
  with pytest.raises(ValueError, match="views must be"):
    mrf_study.run_study(tiny_config(), str(tmp_path), views=("side",))
