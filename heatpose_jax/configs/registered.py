"""Any registered dataset, from its spec (`heatpose_jax.data.dataset_specs`): a dataset
trains, evaluates and predicts without a config file of its own.

  python -m experiments.train \
    --config=heatpose_jax/configs/registered.py:name=mine,module=my_datasets --workdir=...

Arguments: name (the dataset, required), module (imported first: it registers
`name`; kept in `config.dataset_module` so that evaluation and prediction import
it too), tfds (builder config name), tiny, pool, steps, standard, dropout, bf16.

The spec gives the TFDS name, the crop (`crop_mode`, `box_scale`), the
evaluation split and the metric (`normalizer`); the model is the half-size one
on 128×128 crops (as synthetic.py and lsp.py). A dataset that no module
registers but whose build stored its spec (`features.spec_metadata`) gets the
defaults of a spec here; its own spec is read from the build when the run starts.
"""

from heatpose_jax.configs import common
from heatpose_jax.data import dataset_specs


def get_config(arg=None):
  a = common.parse_arg(arg, **common.SHARED_ARGS, name="", module="", tfds="")
  if not a.name:
    raise ValueError("configs/registered.py needs name=DATASET (a registered dataset)")
  dataset_specs.import_modules(a.module, "module")
  # None where no module registers it: the defaults below (`from_config` reads the
  # spec its build stored when the run starts).
  spec = dataset_specs.SPECS.get(a.name)
  c = common.base_config()
  c.dataset = a.name
  c.dataset_module = a.module
  c.tfds_name = getattr(spec, "tfds_name", a.name)
  c.tfds_config = a.tfds
  common.apply_half_size(c)
  c.crop_mode = getattr(spec, "crop_mode", "extent")
  c.box_scale = getattr(spec, "box_scale", 0.0)
  c.eval_split = getattr(spec, "eval_split", "test")
  c.eval.normalizer = getattr(spec, "normalizer", "torso_size")
  if a.tiny:
    common.apply_tiny(c)
  common.finish(c, a)
  return c
