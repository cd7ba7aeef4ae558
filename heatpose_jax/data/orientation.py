"""One rule for every decoded photo: pixels are read as the photo is shown, with
its EXIF orientation applied (what `PIL.ImageOps.exif_transpose` does).

A phone stores a portrait photo as landscape pixels plus an EXIF Orientation tag
(0x0112); viewers, annotation tools and `Predictor` show it upright. The builders'
`image_hw` and joints, the input pipeline's canvases and `Predictor` all use
that upright frame, so a joint annotated on the photo as shown lands on what the
photo shows. (Before, builders measured the raw pixel frame: a 105 × 140 portrait
stored as 140 × 105 kept joints at x = 139 "inside" a 105-px-wide image.)

No JAX, no TFDS: the builders (`data_prep`), the pipeline and `Predictor` import it.
"""

from __future__ import annotations

from PIL import ExifTags, Image

# EXIF orientation -> (the transpose that shows the photo upright, as
# `ImageOps.exif_transpose`; whether the upright x and y axes run against the
# stored axes they come from). 5-8 also swap width and height.
_T = Image.Transpose
TRANSPOSES = {
  2: (_T.FLIP_LEFT_RIGHT, (True, False)),
  3: (_T.ROTATE_180, (True, True)),
  4: (_T.FLIP_TOP_BOTTOM, (False, True)),
  5: (_T.TRANSPOSE, (False, False)),
  6: (_T.ROTATE_270, (True, False)),
  7: (_T.TRANSVERSE, (True, True)),
  8: (_T.ROTATE_90, (False, True)),
}


def exif_orientation(im: Image.Image) -> int:
  """The image's EXIF orientation, 1..8; 1 (as stored) when absent, unreadable or
  out of range (values `ImageOps.exif_transpose` ignores too)."""
  try:
    value = int(im.getexif().get(ExifTags.Base.Orientation, 1))
  except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels as stored
    return 1
  return value if value in TRANSPOSES else 1


def upright(im: Image.Image, orientation: int | None = None) -> Image.Image:
  """`im` as it is shown (its EXIF orientation applied); `im` itself when upright.

  Args:
    im: an opened image (loaded or not).
    orientation: its `exif_orientation`, if already read.
  """
  o = exif_orientation(im) if orientation is None else orientation
  return im if o == 1 else im.transpose(TRANSPOSES[o][0])


def upright_size(im: Image.Image) -> tuple[int, int]:
  """(width, height) of the image as shown, without decoding its pixels."""
  w, h = im.size
  return (h, w) if exif_orientation(im) in (5, 6, 7, 8) else (w, h)
