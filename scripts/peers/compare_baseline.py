"""Export a run's crops for `simple_baseline.py`, and score its heat-maps beside the
precision study's runs, with the project's own metrics (docs/precision.md, "A
standard model at the CPU study geometry"). Runs in the project's environment.

  python scripts/peers/compare_baseline.py export --run=RUN --output=crops.npz
  python scripts/peers/compare_baseline.py score --runs=[LABEL=]RUN[,RUN...] [--runs=...] \
      --heatmaps='hm*.npz' [--figure=curves.png]

export: the eval crops (the run's config, no augmentation) of the train and test
splits: images `(N, H, W, 3)` uint8, joints `(N, J, 2)` (x, y) input px,
joints_valid, head_size, torso_size, and the flip permutation.
score: per estimate (the runs' phase-1 coarse, final coarse and cascade, from the
precision study's cached predictions `RUN/paper_eval/`, and the baseline decoded by
the argmax or with the log-parabola step), mean over runs: PCK (torso) at 0.05, 0.1,
0.2, PCKh@0.5, the `errors` evaluator's swap and miss shares, the x error's σ and
robust σ within the study's window, the share of errors beyond half the window and
their share of Σe².
"""

import glob
import os

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from heatpose_jax import from_config
from heatpose_jax.evaluation import metrics
from heatpose_jax.evaluation.evaluators import errors
from heatpose_jax.model import codec
from studies import precision
from studies import predictions as preds_lib

flags.DEFINE_string("run", "", "export: a training run's workdir (its config.json is used).")
flags.DEFINE_string("output", "", "export: the .npz to write (must not exist).")
flags.DEFINE_string("splits", "train,test", "export: the splits, all of each.")
flags.DEFINE_multi_string(
  "runs", [], "score: [LABEL=]RUN,RUN,...: precision study run workdirs (repeatable)."
)
flags.DEFINE_string("heatmaps", "", "score: glob of simple_baseline.py outputs.")
flags.DEFINE_string("figure", "", "score: also draw the PCK curves into this PNG.")
flags.DEFINE_string(
  "cache_digest", "", "score: the predictions' digest where a run has several (crop, split)."
)
FLAGS = flags.FLAGS


def export(run: str, output: str, splits: list[str]) -> None:
  if os.path.exists(output):
    raise FileExistsError(f"--output={output} exists: give a new name")
  cfg = from_config.load_run_config(run)
  from_config.use_run_spec(run, cfg)
  cfg.max_eval_examples = 0
  out = {}
  for split in splits:
    parts: dict[str, list] = {}
    for b in from_config.eval_batches(cfg, from_config.eval_source(cfg, run, split)):
      real = np.asarray(b["_mask"], bool)
      for k in ("image", "joints", "joints_valid", "head_size", "torso_size"):
        parts.setdefault(k, []).append(np.asarray(b[k])[real])
    out.update({f"{split}_{k}": np.concatenate(v) for k, v in parts.items()})
    print(split, out[f"{split}_image"].shape)
  out["flip_perm"] = np.asarray(from_config.skeleton(cfg).flip_permutation)
  np.savez_compressed(output, **out)


def stats(p: dict, key: str, skeleton, window: float) -> tuple[dict, np.ndarray]:
  """The row of one estimate `p[key]` `(N, J, 2)` against `p['joints']`, and its PCK
  curve (torso, all joints) over `precision.CURVE_ALPHAS`."""
  pred, gt, valid = p[key], p["joints"], p["joints_valid"] > 0
  e = (pred[..., 0] - gt[..., 0])[valid]
  e = e[np.abs(e) <= window]
  far = np.abs(e) > window / 2
  curve = preds_lib.pck_columns(p, key, skeleton, "torso_size", precision.CURVE_ALPHAS)["All"]
  at = dict(zip(np.round(precision.CURVE_ALPHAS, 3).tolist(), curve, strict=True))
  pckh = preds_lib.pck_columns(p, key, skeleton, "head_size", [0.5])["All"]
  # `errors` classifies the estimates it knows by name: the row's estimate as 'cascade'.
  one = {"cascade": pred, **{k: p[k] for k in ("joints", "joints_valid", "head_size")}}
  r = errors.evaluate(one, skeleton=skeleton, pools={}, normalizer="head_size", alpha=0.5)
  s = metrics.x_error_stats(pred, gt, valid, window)
  row = {
    "PCK@0.05": at[0.05],
    "PCK@0.1": at[0.1],
    "PCK@0.2": at[0.2],
    "PCKh@0.5": pckh[0],
    "swap %": r["cascade"]["swap"]["all"],
    "miss %": r["cascade"]["miss"]["all"],
    "σx px": s.sigma,
    "robust σx": s.robust_sigma,
    "far %": 100 * far.mean(),
    "far Σe² %": 100 * (e[far] ** 2).sum() / (e**2).sum(),
  }
  return row, curve


def score(groups: list[str], pattern: str, digest: str = "", figure: str = "") -> None:
  """Prints the table; `groups`: `[LABEL=]RUN,RUN,...` each (the label names its rows)."""
  rows: dict[str, list[dict]] = {}
  curves: dict[str, list[np.ndarray]] = {}
  ref, window = None, 0.0
  for group in groups:
    label, _, runs = group.rpartition("=")
    label = f"ours ({label})" if label else "ours"
    for run in runs.split(","):
      cfg = from_config.load_run_config(run)
      from_config.use_run_spec(run, cfg)
      sk = from_config.skeleton(cfg)
      total = from_config.total_steps(cfg)
      for name, step, key in (
        ("coarse, phase 1 (the study's)", from_config.phase_end(cfg, "coarse"), "coarse"),
        ("coarse, final", total, "coarse"),
        ("cascade", total, "cascade"),
      ):
        (path,) = glob.glob(os.path.join(run, "paper_eval", f"step{step}_*{digest}.npz"))
        p = dict(np.load(path))
        # The study's window: the paper's ±20 px scaled with the eval split's torso.
        torso = float(np.median(p["torso_size"]))
        window = precision.geometry_scale(torso) * preds_lib.HIST_RANGE_PX
        row, curve = stats(p, key, sk, window)
        rows.setdefault(f"{label}: {name}", []).append(row)
        if name != "coarse, final":
          curves.setdefault(f"{label}: {name}", []).append(curve)
        ref = p  # the ground truth the baseline is scored against (the same test crops)
  for f in sorted(glob.glob(pattern)):
    z = np.load(f)
    hc = codec.HeatmapCodec(int(z["stride"]))
    maps = jnp.moveaxis(jnp.asarray(z["hm"]), 1, -1)
    for refine, name in ((False, "argmax"), (True, "log-parabola")):
      p = dict(ref, baseline=np.asarray(hc.decode(maps, refine=refine)[0]))
      row, curve = stats(p, "baseline", sk, window)
      rows.setdefault(f"simple baseline, {name}", []).append(row)
      curves.setdefault(f"simple baseline, {name}", []).append(curve)
    print(f"{f}: {int(z['steps'])} steps, {float(z['train_s']):.0f} s of training")
  cols = list(next(iter(rows.values()))[0])
  print(f"window ±{window:.2f} px; mean ± std over runs / seeds")
  print("| estimate | n | " + " | ".join(cols) + " |")
  print("|---|---|" + "---|" * len(cols))
  for name, rs in rows.items():
    d = {c: 2 if "σ" in c else 1 for c in cols}
    cells = [
      f"{np.mean([r[c] for r in rs]):.{d[c]}f} ± {np.std([r[c] for r in rs]):.{d[c]}f}"
      for c in cols
    ]
    print(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
  if figure:
    _figure(curves, figure)


def _figure(curves: dict[str, list[np.ndarray]], path: str) -> None:
  """PCK (torso, all joints) against α, mean over seeds, one line per estimate."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, cs in curves.items():
    style = "--" if "coarse" in name or "argmax" in name else "-"
    ax.plot(precision.CURVE_ALPHAS, np.mean(cs, 0), style, label=f"{name} ({len(cs)})")
  ax.set(xlabel="α (fraction of the torso)", ylabel="PCK, all joints (%)", ylim=(0, 100))
  ax.set_title("The CPU study geometry: ours vs a simple baseline (test split)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print("figure:", path)


def main(argv):
  if argv[1:] == ["export"]:
    export(FLAGS.run, FLAGS.output, FLAGS.splits.split(","))
  elif argv[1:] == ["score"]:
    score(FLAGS.runs, FLAGS.heatmaps, FLAGS.cache_digest, FLAGS.figure)
  else:
    raise app.UsageError("give one command: export or score")


if __name__ == "__main__":
  app.run(main)
