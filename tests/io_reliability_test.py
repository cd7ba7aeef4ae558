"""The output and input side of docs/reliability.md, through the CLIs and `Predictor`:
class 1 (a run never writes over a file it did not create), 4 (one output per
input), 7 (partial input is reported), 8 (values outside their domain are
refused), 10 (every OS-level failure is one line). Each test tries several
members of its class and checks the exit status, the one line, and that no user
file changed (checksums before and after)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import h5py
import numpy as np
import pytest
from evaluate_predictions_test import expect_error, run_main
from PIL import Image

from conftest import SYNTHETIC_CONFIG, cli_env, one_line_error, run_cli
from heatpose_jax import Predictor
from heatpose_jax.core import outputs
from heatpose_jax.data import synthetic

# The tests sharing the session fixture `tiny_run` run on one xdist worker (built once).
pytestmark = pytest.mark.xdist_group("tiny_run")

REPO = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0  # permissions do not stop root


def _cli(*args, timeout=300):
  return run_cli(*args, devices=1, timeout=timeout)


# Every write to a path matching FAULT fails with OSError CODE, raised by the OS calls
# themselves (open, os.open, os.mkdir); then the module runs as `python -m`.
_FAULT_WRAPPER = """
import builtins, errno, os, re, runpy, sys
FAULT, CODE = re.compile(sys.argv[1]), getattr(errno, sys.argv[2])
def _hit(p):
  try:
    return bool(FAULT.search(os.path.abspath(os.fsdecode(p))))
  except TypeError:
    return False
def _fail(p):
  raise OSError(CODE, os.strerror(CODE), os.fsdecode(p))
_open, _os_open, _mkdir = builtins.open, os.open, os.mkdir
def open_(file, mode="r", *a, **k):
  if any(c in mode for c in "wax+") and _hit(file):
    _fail(file)
  return _open(file, mode, *a, **k)
def os_open(path, flags, *a, **k):
  if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _hit(path):
    _fail(path)
  return _os_open(path, flags, *a, **k)
def mkdir(path, *a, **k):
  if _hit(path):
    _fail(path)
  return _mkdir(path, *a, **k)
builtins.open, os.open, os.mkdir = open_, os_open, mkdir
sys.argv = sys.argv[3:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def faulty(fault_re: str, code: str, module: str, *args: str) -> list[str]:
  """The command line of `python -m module args` where every write to a path matching
  `fault_re` fails with OSError `code` (EROFS: a read-only file system; ENOSPC: a
  full disk)."""
  return ["-c", _FAULT_WRAPPER, fault_re, code, module, *args]


def cli(module: str, *args: str) -> list[str]:
  return ["-m", module, *args]


def run_all(*commands: list[str], timeout: int = 300) -> list[subprocess.CompletedProcess]:
  """Python command lines (`cli`, `faulty`) run side by side, as `conftest.run_cli`
  runs one; their CompletedProcesses in order."""
  env = cli_env()
  procs = [
    subprocess.Popen(
      [sys.executable, *c],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for c in commands
  ]
  out = []
  for c, p in zip(commands, procs, strict=True):
    stdout, stderr = p.communicate(timeout=timeout)
    out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
  return out


_one_line_error = one_line_error


def _tree(*roots) -> dict[str, str]:
  """Every entry under `roots` → its checksum (files), link target or kind."""
  out = {}
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
      for name in dirnames + filenames:
        p = os.path.join(dirpath, name)
        if os.path.islink(p):
          out[p] = "-> " + os.readlink(p)
        elif os.path.isfile(p) and os.access(p, os.R_OK):
          out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        else:
          out[p] = "dir" if os.path.isdir(p) else "other"
  return out


def _photo(seed, hw=(60, 80)):
  return synthetic.render_example(np.random.default_rng(seed), *hw)["image"]


def _video(path: Path, n: int, hw=(64, 96), fps=8, cut: float | None = None, **kwargs) -> Path:
  import imageio.v2 as imageio

  with imageio.get_writer(path, fps=fps, macro_block_size=1, **kwargs) as w:
    for i in range(n):
      w.append_data(_photo(i, hw))
  if cut is not None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
  return path


@pytest.fixture(autouse=True)
def _no_ffmpeg_fork(monkeypatch):
  monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")  # no fork of this JAX process


# --- class 1: never over a file the run did not create --------------------------------


def test_class1_no_command_writes_over_an_input_or_a_users_file(tiny_run, tmp_path):
  photos, clips, user = tmp_path / "photos", tmp_path / "clips", tmp_path / "user"
  for d in (photos, clips, user):
    d.mkdir()
  Image.fromarray(_photo(1)).save(photos / "a.png")
  Image.fromarray(_photo(2)).save(photos / "b.jpg")
  Image.fromarray(_photo(3)).save(user / "b.png")  # the user's own pictures and notes
  Image.fromarray(_photo(4)).save(user / "sheet.png")
  (user / "model.json").write_text('{"mine": true}\n')
  _video(clips / "walk.mp4", 2)
  before = _tree(tmp_path, tiny_run)
  w = f"--workdir={tiny_run}"
  config, walk = tiny_run / "config.json", clips / "walk.mp4"
  cases = {
    # predict: the output folder is the photos' folder; an overlay would land on an
    # input photo (a glob into its own folder) or on a user's file that is not an
    # input; a video's overlay would replace the source video.
    "folder": (
      cli("experiments.predict", w, f"--images={photos}", f"--output_dir={photos}"),
      [f"--output_dir={photos} is the --images folder {photos}", f"{photos / 'a.png'}"],
    ),
    "on-input": (
      cli("experiments.predict", w, f"--images={photos}/*.png", f"--output_dir={photos}"),
      [f"{photos / 'a.png'} would replace the input {photos / 'a.png'}"],
    ),
    "on-user-file": (
      cli("experiments.predict", w, f"--images={photos}", f"--output_dir={user}"),
      [f"{user / 'b.png'} exists and was not written by heatpose_jax"],
    ),
    "video": (
      cli("experiments.predict", w, f"--video={walk}", f"--output_dir={clips}"),
      [f"{walk} would replace the input {walk}"],
    ),
    # export: its signature (the .json beside the output) would be the output
    # itself, or the run's own config.json.
    "export-json": (
      cli("experiments.export", w, f"--output={user / 'model.json'}"),
      [f"--output={user / 'model.json'}: its signature", "would be the same file"],
    ),
    "export-config": (
      cli("experiments.export", w, f"--output={tiny_run / 'config.jax'}"),
      [f"{config} would replace the input {config}"],
    ),
    # browse_dataset: a user's picture at --output.
    "browse-user": (
      cli("experiments.browse_dataset", "--dataset=synthetic", f"--output={user / 'sheet.png'}"),
      [f"{user / 'sheet.png'} exists and was not written by heatpose_jax"],
    ),
  }
  results = run_all(*(c for c, _ in cases.values()))
  for (name, (_, needles)), r in zip(cases.items(), results, strict=True):
    assert r.returncode == 1, name
    _one_line_error(r, *needles)
  assert _tree(tmp_path, tiny_run) == before  # nothing changed, nothing added

  # evaluate_predictions: --output_json on its own inputs or on a user's file; its
  # own earlier output is replaced.
  gt, preds = _mpii_files(tmp_path, n=3)
  args = ["--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}"]
  before = _tree(tmp_path)
  for target, needle in (
    (preds, f"{preds} would replace the input {preds}"),
    (gt, f"{gt} would replace the input {gt}"),
    (user / "model.json", "exists and was not written by heatpose_jax"),
  ):
    assert needle in _scores_error(*args, f"--output_json={target}")
  assert _tree(tmp_path) == before
  out = tmp_path / "scores.json"
  for _ in range(2):  # the second run replaces the first one's file
    _scores(*args, f"--output_json={out}")
    assert json.loads(out.read_text())["num_examples"] == 3


def _mpii_files(tmp_path: Path, n: int, layout: str = "NJ2") -> tuple[Path, Path]:
  """A stacked-hourglass valid.h5 of n people and perfect predictions in `layout`."""
  rng = np.random.default_rng(0)
  part = rng.uniform(10, 90, (n, 16, 2)).round()
  gt = tmp_path / "valid.h5"
  with h5py.File(gt, "w") as f:
    f["part"], f["normalize"] = part, np.full(n, 20.0)
  arr = {"NJ2": part, "2JN": part.transpose(2, 1, 0), "J2N": part.transpose(1, 2, 0)}[layout]
  preds = tmp_path / f"preds_{layout}.h5"
  with h5py.File(preds, "w") as f:
    f["preds"] = arr
  return gt, preds


# The same in-process call of `evaluate_predictions.main` as its own tests.
_scores, _scores_error = run_main, expect_error


# --- class 4: one output per input -----------------------------------------------------


def test_class4_each_input_gets_its_own_overlay(tiny_run, tmp_path):
  root = tmp_path / "in"
  sizes = {
    "a/p/x.jpg": (60, 80),  # same name in two folders
    "b/p/x.jpg": (80, 60),
    "c/p/x.jpg": (50, 100),  # same stem, three suffixes, one in capitals
    "c/p/x.png": (100, 50),
    "c/p/X.JPG": (70, 70),
  }
  for i, (rel, hw) in enumerate(sizes.items()):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_photo(i, hw)).save(root / rel, format="PNG" if rel.endswith("png") else "JPEG")
  # A copy of the run whose spatial model is damaged (a truncated zip): predicting
  # without --torso_box never reads it (class 10).
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  (work / "spatial_model").mkdir()
  buf = tmp_path / "mrf.npz"
  np.savez(buf, meta=np.array("{}"), **{"params/w": np.zeros(100)})
  (work / "spatial_model" / "mrf.npz").write_bytes(buf.read_bytes()[:150])
  before = _tree(root)

  out = tmp_path / "out"
  args = (
    "experiments.predict",
    f"--workdir={work}",
    f"--images={root}/*/p/*",
    f"--output_dir={out}",
  )
  r = _cli(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  data = json.loads((out / "predictions.json").read_text())
  whose = {Path(p["image"]).relative_to(root).as_posix(): p for p in data["predictions"]}
  assert sorted(whose) == sorted(sizes)
  overlays = [p["overlay"] for p in whose.values()]
  assert len({o.casefold() for o in overlays}) == 5  # distinct, even on a case-blind disk
  assert (
    whose["a/p/x.jpg"]["overlay"] == "a_p_x.png" and whose["b/p/x.jpg"]["overlay"] == "b_p_x.png"
  )
  assert whose["c/p/x.png"]["overlay"] == "c_p_x_png.png"
  assert sorted(p.name for p in out.iterdir()) == sorted([*overlays, "predictions.json"])
  for rel, p in whose.items():  # each overlay is its own image's (the source's shape)
    assert tuple(p["image_hw"]) == sizes[rel]
    h, w = np.asarray(Image.open(out / p["overlay"])).shape[:2]
    assert abs(h / w - sizes[rel][0] / sizes[rel][1]) < 0.05, (rel, h, w)
  assert len({(out / o).read_bytes() for o in overlays}) == 5

  # The same command again: it replaces its own earlier outputs (and only those).
  first = _tree(out)
  r = _cli(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(_tree(out)) == sorted(first)
  assert _tree(root) == before


def test_class4_names_never_meet_on_any_disk():
  nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
  long = "x" * 300
  names = outputs.unique_stems(
    [
      f"a/{nfc}.jpg", f"b/{nfd}.jpg",  # one name to a macOS disk
      f"c/{long}.jpg", f"c/{long}.png",  # too long for a file name once joined
      "d/x.jpg", "d/x-2.jpg", "e/x.jpg",  # a generated name meets a real one
      "f/Q.png", "f/q.png",  # one name to a case-blind disk
    ]
  )  # fmt: skip
  keys = [unicodedata.normalize("NFC", n).casefold() for n in names]
  assert len(set(keys)) == len(names)
  assert all(len(f"{n}.png".encode()) <= 255 for n in names)
  assert keys[:2] == ["a_café", "b_café"] and names[-2:] == ["Q_png", "q_png-2"]


# --- class 7: partial input is reported ------------------------------------------------


def test_class7_files_that_are_not_read_are_named_with_the_reason(tiny_run, tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(_photo(1)).save(photos / "good.jpg")
  Image.fromarray(_photo(2)).save(photos / "phone.jfif", format="JPEG")  # read now
  Image.fromarray(_photo(3)).save(photos / "old.jpe", format="JPEG")  # read now
  frames = [Image.fromarray(_photo(i)) for i in (5, 6, 7)]
  frames[0].save(photos / "moving.gif", save_all=True, append_images=frames[1:])  # 1 of 3
  Image.fromarray(_photo(8)).save(photos / "half.jpg")
  (photos / "half.jpg").write_bytes((photos / "half.jpg").read_bytes()[:900])  # cut short
  (photos / "iphone.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
  (photos / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
  os.mkfifo(photos / "pipe.jpg")  # opening it would wait forever
  (photos / "empty.png").write_bytes(b"")
  (photos / "notes.txt").write_text("not a photo\n")
  unreadable = ["iphone.heic", "gone.jpg", "pipe.jpg", "empty.png", "half.jpg"]
  if not ROOT:
    Image.fromarray(_photo(4)).save(photos / "locked.png")
    (photos / "locked.png").chmod(0)
    unreadable.append("locked.png")
  before = _tree(photos)

  out = tmp_path / "out"
  w = f"--workdir={tiny_run}"
  # Without --skip_unreadable the exit status is 3 (predict_test); with it, 0: the
  # report is the same.
  r = _cli(
    "experiments.predict", w, f"--images={photos}", f"--output_dir={out}", "--skip_unreadable"
  )
  assert r.returncode == 0, r.stderr[-3000:]
  reasons = {
    "iphone.heic": "HEIC is not supported: convert it to JPEG",
    "gone.jpg": "a broken link",
    "pipe.jpg": "not a regular file",
    "empty.png": "an empty file",
    "half.jpg": "not a readable image (image file is truncated",
    "locked.png": "no permission",
  }
  for name in unreadable:
    assert f"skipped {photos / name}: {reasons[name]}" in r.stdout, r.stdout
  n = len(unreadable) + 4
  assert f"read 4 of {n} image file(s), skipped {len(unreadable)}" in r.stdout
  note = "3 frames or pages in the file: the first one was read"
  assert f"note {photos / 'moving.gif'}: {note}" in r.stdout
  assert "ignored 1 other file(s) in the folder (notes.txt)" in r.stdout
  data = json.loads((out / "predictions.json").read_text())
  read = {Path(p["image"]).name: p for p in data["predictions"]}
  assert sorted(read) == ["good.jpg", "moving.gif", "old.jpe", "phone.jfif"]
  assert read["moving.gif"]["note"] == note
  assert sorted(Path(s["image"]).name for s in data["skipped"]) == sorted(unreadable)
  assert [Path(i["file"]).name for i in data["ignored"]] == ["notes.txt"]
  assert _tree(photos) == before


def test_class7_a_cut_odd_sized_video_says_how_many_frames_it_gave(tiny_run, tmp_path):
  clips = tmp_path / "clips"
  clips.mkdir()
  # 63×95: odd sides (H.264 needs even ones); the file cut at 40 %.
  cut = _video(clips / "cut.mkv", 20, hw=(63, 95), cut=0.4, codec="libx264", pixelformat="yuv444p")
  before = _tree(clips)
  out = tmp_path / "out"
  args = ("experiments.predict", f"--workdir={tiny_run}", f"--video={cut}", f"--output_dir={out}")
  r = _cli(*args)
  assert r.returncode == 3, r.stderr[-3000:]
  assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr
  data = json.loads((out / "cut.json").read_text())
  n = len(data["frames"])
  assert 0 < n < 20 and data["complete"] is False
  assert data["overlay_hw"] == [64, 96] and data["frames"][0]["image_hw"] == [63, 95]
  said = f"--video={cut}: read {n} of about 20 frames: damaged or cut short"
  assert said in r.stdout and said in r.stderr.strip().splitlines()[-1]
  import imageio.v2 as imageio

  with imageio.get_reader(out / "cut.mp4", "ffmpeg") as reader:
    frames = [f for f in reader]
  assert len(frames) == n and frames[0].shape[:2] == (64, 96)
  assert _tree(clips) == before


# --- class 8: values outside their domain ----------------------------------------------


@pytest.fixture(scope="module")
def predictor(tiny_run):
  return Predictor.from_workdir(str(tiny_run))


def test_class8_predictor_refuses_values_outside_their_domain(predictor):
  rng = np.random.default_rng(0)
  signed = rng.uniform(-1, 1, (60, 80, 3))  # a [-1, 1] normalized image
  for image, needle in (
    (signed, "float values in [-"),
    (signed * 127.5 + 127.5, "expected [0, 1]"),  # 0-255 floats
    (np.full((60, 80, 3), np.nan, np.float32), "NaN"),
  ):
    kept = image.copy()
    with pytest.raises(ValueError) as e:
      predictor(image)
    assert needle in str(e.value) and "\n" not in str(e.value)
    np.testing.assert_array_equal(image, kept)  # the caller's array is untouched
  # [0, 1] floats are what they say: the same joints as their uint8 image.
  unit = (signed + 1) / 2
  np.testing.assert_allclose(
    predictor(unit)["joints"], predictor(np.round(unit * 255).astype(np.uint8))["joints"]
  )

  photo = _photo(5)  # 80 wide, 60 high
  for box, needle in (
    ((5000, 5000, 5100, 5200), "lies outside the image"),
    ((-900, -900, -400, -300), "lies outside the image"),
    ((0, 0, 1e30, 1e30), "more than 2× the image"),
    ((10, 10, 5, 30), "x2 > x1"),
    ((10, 10, float("nan"), 30), "finite"),
  ):
    with pytest.raises(ValueError) as e:
      predictor(photo, torso_box=box)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
  with pytest.raises(ValueError, match="spatial model"):  # a box that fits: no MRF here
    predictor(photo, torso_box=(20, 10, 50, 40))


def test_class8_an_ambiguous_predictions_layout_is_never_guessed(tmp_path):
  # N = 2: (2, 16, 2) reads as (N, 16, 2) or as (2, 16, N).
  gt, preds = _mpii_files(tmp_path, n=2, layout="2JN")
  args = ["--dataset=mpii", f"--predictions={preds}", f"--ground_truth={gt}"]
  before = _tree(tmp_path)
  msg = _scores_error(*args)
  assert "(2, 16, 2)" in msg and "--predictions_layout=NJ2 or 2JN" in msg and "not guessed" in msg
  out = tmp_path / "scores.json"
  _scores(*args, "--predictions_layout=2JN", f"--output_json={out}")
  assert json.loads(out.read_text())["tables"]["0.5"]["Total"] == 100.0
  # A layout that does not fit the shape, and an unknown one.
  assert "not the layout J2N" in _scores_error(*args, "--predictions_layout=J2N")
  assert "expected one of NJ2, J2N, 2JN" in _scores_error(*args, "--predictions_layout=NJ")
  # Unambiguous shapes need no flag (N = 3 in the (2, J, N) layout).
  (tmp_path / "three").mkdir()
  gt3, preds3 = _mpii_files(tmp_path / "three", n=3, layout="2JN")
  _scores("--dataset=mpii", f"--predictions={preds3}", f"--ground_truth={gt3}")
  assert {k: v for k, v in _tree(tmp_path).items() if k in before} == before


# --- class 10: OS-level failures are one line ------------------------------------------


def test_class10_os_failures_are_one_line_and_lose_nothing(tiny_run, tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  for i, name in enumerate(("first", "second", "third")):
    Image.fromarray(_photo(i)).save(photos / f"{name}.png")
  a_file = tmp_path / "a_file"
  a_file.write_text("the user's notes\n")
  before = _tree(photos, a_file)
  w = f"--workdir={tiny_run}"

  # A damaged spatial model (a zip cut short), when evaluate would score it.
  work = tmp_path / "run"
  shutil.copytree(tiny_run, work)
  (work / "spatial_model").mkdir()
  mrf = work / "spatial_model" / "mrf.npz"
  mrf.write_bytes(b"PK\x03\x04" + b"\0" * 40)
  ro = tmp_path / "ro"
  ro.mkdir()
  run_before = _tree(work)
  cases = {
    # A regular file where a folder is expected: --output_dir, train's --workdir.
    "output-dir-file": (
      cli("experiments.predict", w, f"--images={photos}", f"--output_dir={a_file}"),
      [f"--output_dir={a_file}: is a file, not a folder"],
    ),
    "workdir-file": (
      cli("experiments.train", f"--config={SYNTHETIC_CONFIG}:tiny", f"--workdir={a_file}"),
      [f"{a_file}: is a file, not a folder"],
    ),
    # A read-only file system: refused before any work.
    "read-only-predict": (
      faulty(
        f"^{ro}/", "EROFS", "experiments.predict", w, f"--images={photos}", f"--output_dir={ro}"
      ),
      [f"--output_dir={ro}: cannot write there (Read-only file system)"],
    ),
    "damaged-mrf": (
      # (its compilation cache a file: one warning line, the command goes on)
      cli("experiments.evaluate", f"--workdir={work}", f"--compilation_cache_dir={a_file}"),
      [f"{mrf}: damaged spatial model (BadZipFile", "--nospatial_model"],
    ),
  }
  results = run_all(*(c for c, _ in cases.values()))
  for (name, (_, needles)), r in zip(cases.items(), results, strict=True):
    assert r.returncode == 1, name
    _one_line_error(r, *needles)
  warning = f"warning: --compilation_cache_dir={a_file}: is a file, not a folder; compiling"
  assert results[-1].stderr.splitlines()[0].startswith(warning), results[-1].stderr
  assert list(ro.iterdir()) == [] and _tree(work) == run_before

  # The disk fills up at the second overlay: one line naming it; the first overlay
  # and a predictions.json that says the run did not complete stay.
  out = tmp_path / "out"
  (r,) = run_all(
    faulty(
      rf"^{out}/\.second\.png",
      "ENOSPC",
      "experiments.predict",
      w,
      f"--images={photos}",
      f"--output_dir={out}",
      "--batch_size=1",
    )  # fmt: skip
  )
  _one_line_error(r, f"{out / 'second.png'}: No space left on device")
  assert sorted(p.name for p in out.iterdir()) == ["first.png", "predictions.json"]
  data = json.loads((out / "predictions.json").read_text())
  assert data["complete"] is False and [Path(p["image"]).name for p in data["predictions"]] == [
    "first.png"
  ]
  assert _tree(photos, a_file) == before
