"""Behaviour of the coarse, crop, fine and cascade modules."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatpose_jax.model import codec, losses, models

TINY = 1 / 16


def tiny_coarse(variant="flic", pool_factor=8, num_joints=7, **kw):
  convs, pools = models.bank_layout(variant, TINY)
  return models.CoarseNet(
    num_joints=num_joints,
    bank_convs=convs,
    pool_after=pools,
    pool_factor=pool_factor,
    head_features=(16, 16),
    **kw,
  )


def _codecs(coarse, context=36):
  """The codecs `make_model` gives a cascade of `coarse` with a `context`-px window."""
  return codec.HeatmapCodec(coarse.stride), codec.WindowCodec(context)


def tiny_cascade(num_joints=4, pool_factor=8, context=36):
  coarse = tiny_coarse(pool_factor=pool_factor, num_joints=num_joints)
  fine = models.FineNet(num_joints=num_joints, bank_convs=((3, 4), (3, 8)), merge_features=8)
  return models.Cascade(coarse, fine, *_codecs(coarse, context))


@pytest.mark.parametrize("variant,hw", [("flic", (240, 320)), ("mpii", (256, 256))])
@pytest.mark.parametrize("pool_factor", [4, 8, 16])
def test_full_size_output_shapes(variant, hw, pool_factor):
  convs, pools = models.bank_layout(variant)
  j = 7 if variant == "flic" else 16
  coarse = models.CoarseNet(j, convs, pools, pool_factor=pool_factor)
  model = models.Cascade(coarse, models.FineNet(j), *_codecs(coarse))
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  h, w = -(-hw[0] // pool_factor), -(-hw[1] // pool_factor)
  assert isinstance(out, models.CascadeOutput)
  assert out.coarse_heatmaps.shape == (2, h, w, j)
  assert out.fine_heatmaps.shape == (2, j, 36, 36)
  assert out.xy.shape == (2, j, 2)
  # Feature counts are the same whatever the pooling.
  kernels = [p.shape for p in jax.tree.leaves(variables["params"]["coarse"])]
  assert (9, 9, 128, 512) in kernels


def test_bad_pool_factor_is_rejected():
  model = tiny_coarse(pool_factor=6)
  with pytest.raises(ValueError, match="pool_factor"):
    jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0, impl="rbg"), jnp.zeros((1, 64, 64, 3))
    )


def test_spatial_dropout_drops_whole_feature_maps():
  model = tiny_coarse(dropout="spatial", dropout_rate=0.5)
  x = jax.random.uniform(jax.random.key(0), (4, 96, 96, 3), maxval=255.0)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1, impl="rbg"), x)

  @functools.partial(jax.jit, static_argnums=0)
  def dropout_io(train, seed):
    _, state = model.apply(
      variables,
      x,
      train=train,
      rngs={"dropout": jax.random.key(seed)},
      capture_intermediates=lambda mdl, _: isinstance(mdl, flax.linen.Dropout),
      mutable=["intermediates"],
    )
    (out,) = jax.tree.leaves(state["intermediates"])
    return out

  # The dropout input is the merged bank output; compare against eval mode.
  before = dropout_io(False, 0)
  after = dropout_io(True, 0)
  assert before.shape == after.shape
  active = np.asarray(jnp.any(before != 0, axis=(1, 2)))  # (B, C) maps with signal
  zero = np.asarray(jnp.all(after == 0, axis=(1, 2)))
  kept = np.asarray(jnp.allclose(after, before * 2.0, atol=1e-5))
  # Every map is either entirely zero or entirely kept (scaled by 1/(1-p)).
  scaled = np.asarray(jnp.all(jnp.abs(after - 2.0 * before) < 1e-4, axis=(1, 2)))
  assert np.all(zero | scaled)
  rate = zero[active].mean()
  assert 0.3 < rate < 0.7, rate
  assert not kept
  # Identity at evaluation: two eval passes with different rngs agree.
  np.testing.assert_array_equal(dropout_io(False, 1), before)


def test_standard_dropout_drops_single_activations():
  model = tiny_coarse(dropout="standard", dropout_rate=0.5)
  x = jax.random.uniform(jax.random.key(0), (2, 96, 96, 3), maxval=255.0)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1, impl="rbg"), x)
  _, state = jax.jit(
    functools.partial(
      model.apply,
      train=True,
      capture_intermediates=lambda mdl, _: isinstance(mdl, flax.linen.Dropout),
      mutable=["intermediates"],
    )
  )(variables, x, rngs={"dropout": jax.random.key(3)})
  (out,) = jax.tree.leaves(state["intermediates"])
  zero = np.asarray(out == 0)
  # Some maps are partly dropped: not whole-map dropout.
  partial = zero.any(axis=(1, 2)) & ~zero.all(axis=(1, 2))
  assert partial.mean() > 0.5


def reference_crop(features, origin, stride, size):
  f = np.asarray(features)
  b, h, w, c = f.shape
  out = np.zeros((b, origin.shape[1], size, size, c), f.dtype)
  for i in range(b):
    for j in range(origin.shape[1]):
      x0, y0 = np.asarray(origin[i, j]) // stride
      for r in range(size):
        for q in range(size):
          y, x = y0 + r, x0 + q
          if 0 <= y < h and 0 <= x < w:
            out[i, j, r, q] = f[i, y, x]
  return out


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_crops_equal_direct_slicing_including_borders(stride):
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(2, 64 // stride, 48 // stride, 3)).astype(np.float32)
  # Centres inside, at each border and in the corners.
  xy = np.array(
    [
      [[20.0, 30.0], [0.0, 0.0], [47.0, 63.0], [-3.0, 10.0]],
      [[47.0, 0.0], [0.0, 63.0], [24.0, 66.0], [10.0, 10.0]],
    ],
    np.float32,
  )
  origin = models.window_origin(jnp.asarray(xy), 36)
  assert np.all(np.asarray(origin) % models.CROP_ALIGN == 0)
  size = 36 // stride
  got = models.crop_windows(jnp.asarray(feats), origin, stride, size)
  np.testing.assert_array_equal(np.asarray(got), reference_crop(feats, origin, stride, size))
  # The window is centred on the request within the alignment step.
  centre = np.asarray(origin) + (36 - 1) / 2
  assert np.all(np.abs(centre - xy) <= models.CROP_ALIGN / 2)


def test_crop_gradient_adds_back_into_features():
  feats = jnp.zeros((1, 16, 16, 1))
  origin = jnp.array([[[0, 0], [4, 0]]], jnp.int32)  # two overlapping windows
  g = jax.grad(lambda f: models.crop_windows(f, origin, 1, 8).sum())(feats)
  g = np.asarray(g)[0, :, :, 0]
  assert g[0, 0] == 1 and g[0, 5] == 2 and g[0, 11] == 1 and g[8, 0] == 0


def test_fine_net_shares_weights_and_has_per_joint_outputs():
  j = 5
  fine = models.FineNet(num_joints=j, bank_convs=((3, 4), (3, 8)), merge_features=8)
  rng = np.random.default_rng(0)
  crops = [
    jnp.asarray(rng.normal(size=(2, j, s, s, c)), jnp.float32)
    for s, c in [(36, 3), (18, 5), (18, 3), (9, 5)]
  ]
  params = jax.jit(fine.init)(jax.random.key(0, impl="rbg"), crops)["params"]
  # One shared set per bank (no joint axis) plus a per-joint output layer.
  assert params["bank0_conv0"]["kernel"].shape == (3, 3, 3, 4)
  assert params["joint_kernel"].shape == (j, 8) and params["joint_bias"].shape == (j,)
  n_shared = sum(
    x.size for k, v in params.items() if k.startswith(("bank", "merge")) for x in jax.tree.leaves(v)
  )
  assert models.fine_param_count(j, (3, 5, 3, 5), ((3, 4), (3, 8)), 8) == n_shared + j * 9
  # The same window at joints 1 and 3 gives outputs that differ only by their
  # own output layers: set those equal and the outputs are equal.
  same = [c.at[:, 3].set(c[:, 1]) for c in crops]
  p2 = dict(params)
  p2["joint_kernel"] = params["joint_kernel"].at[3].set(params["joint_kernel"][1])
  p2["joint_bias"] = params["joint_bias"].at[3].set(params["joint_bias"][1])
  out = fine.apply({"params": p2}, same)
  np.testing.assert_allclose(out[:, 3], out[:, 1], rtol=1e-6)
  # Changing joint 0's crop changes joint 0's output only.
  moved = [c.at[:, 0].add(1.0) for c in crops]
  a, b = fine.apply({"params": params}, crops), fine.apply({"params": params}, moved)
  assert not np.allclose(a[:, 0], b[:, 0])
  np.testing.assert_allclose(a[:, 1:], b[:, 1:], rtol=1e-6)


@pytest.mark.parametrize("freeze", [False, True])
def test_fine_loss_gradient_reaches_coarse_first_conv_unless_frozen(freeze):
  model = tiny_cascade(context=16)
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), maxval=255.0)
  joints = jax.random.uniform(jax.random.key(1), (1, 4, 2), minval=4, maxval=28)
  valid = jnp.ones((1, 4))
  params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(2, impl="rbg"), x)[
    "params"
  ]

  def e2(p):
    out = model.apply({"params": p}, x, train=False, freeze_coarse=freeze)
    t = codec.WindowCodec(16, 1.5).encode(joints, valid, out.window_origin)
    return losses.fine_loss(out.fine_heatmaps, t, valid)

  g = jax.jit(jax.grad(e2))(params)
  g_first = np.abs(np.asarray(g["coarse"]["bank0_conv0"]["kernel"])).sum()
  g_fine = np.abs(np.asarray(g["fine"]["bank0_conv0"]["kernel"])).sum()
  assert g_fine > 0
  if freeze:
    assert g_first == 0
    assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(g["coarse"]))
  else:
    assert g_first > 0


def test_cascade_final_is_coarse_plus_fine_offset():
  model = tiny_cascade(pool_factor=4)
  x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), maxval=255.0)
  v = jax.jit(functools.partial(model.init, train=False))(jax.random.key(2, impl="rbg"), x)
  out = jax.jit(functools.partial(model.apply, train=False))(v, x)
  fine_xy, _ = codec.WindowCodec(36).decode(out.fine_heatmaps, out.window_origin)
  np.testing.assert_allclose(out.xy, fine_xy)
  # The window lies around the coarse estimate.
  centre = out.window_origin + 17.5
  assert np.all(np.abs(np.asarray(centre - out.coarse_xy)) <= 2.5)


def test_standard_cascade_matches_parameter_count():
  j = 7
  convs, pools = models.bank_layout("flic")
  coarse = models.CoarseNet(j, convs, pools)
  fine = models.FineNet(j)
  feat_channels = (convs[0][1], convs[1][1], convs[0][1], convs[1][1])
  std_convs = models.matched_standard_features(
    j, feat_channels, 3, fine.bank_convs, fine.merge_features
  )
  std = models.StandardCascade(coarse, models.FineNet(j, bank_convs=std_convs), *_codecs(coarse))
  ours = models.Cascade(coarse, fine, *_codecs(coarse))
  x = jax.ShapeDtypeStruct((1, 240, 320, 3), jnp.float32)

  def count(m):
    v = jax.eval_shape(lambda x: m.init(jax.random.key(0), x, train=False), x)
    return sum(p.size for p in jax.tree.leaves(v["params"]))

  a, b = count(ours), count(std)
  assert abs(a - b) / a < 0.001, (a, b)


def test_standard_cascade_gives_no_gradient_to_coarse_from_e2():
  j = 3
  coarse = tiny_coarse(num_joints=j, pool_factor=4)
  fine = models.FineNet(j, bank_convs=((3, 4), (3, 4), (3, 8)), merge_features=8)
  model = models.StandardCascade(coarse, fine, *_codecs(coarse, 16))
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), maxval=255.0)
  params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1, impl="rbg"), x)[
    "params"
  ]
  g = jax.jit(jax.grad(lambda p: model.apply({"params": p}, x, train=False).fine_heatmaps.sum()))(
    params
  )
  assert all(np.all(np.asarray(v) == 0) for v in jax.tree.leaves(g["coarse"]))
  assert np.abs(np.asarray(g["fine"]["bank0_conv0"]["kernel"])).sum() > 0


def test_bf16_compute_keeps_f32_params():
  model = tiny_coarse(dtype=jnp.bfloat16, pool_factor=4)
  x = jnp.ones((1, 64, 64, 3))
  v = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0, impl="rbg"), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  out = jax.jit(functools.partial(model.apply, train=False))(v, x)
  assert out["heatmaps"].dtype == jnp.float32
  assert out["crop_features"][0].dtype == jnp.bfloat16


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (5, 4)])
def test_max_pool_equals_flax_max_pool_and_its_gradient(hw):
  x = jax.random.normal(jax.random.key(1), (2, *hw, 3))
  want = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
  np.testing.assert_array_equal(models.max_pool_2x2(x), want)
  # Continuous random inputs have no ties: the gradients agree exactly too.
  g = jax.random.normal(jax.random.key(2), want.shape)
  got = jax.grad(lambda v: jnp.sum(models.max_pool_2x2(v) * g))(x)
  ref = jax.grad(lambda v: jnp.sum(nn.max_pool(v, (2, 2), (2, 2), padding="SAME") * g))(x)
  np.testing.assert_array_equal(got, ref)
  bf = models.max_pool_2x2(x.astype(jnp.bfloat16))
  assert bf.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
    bf.astype(jnp.float32), want.astype(jnp.bfloat16).astype(jnp.float32)
  )


@pytest.mark.parametrize("hw,kernel", [((8, 8), 9), ((6, 10), 7), ((3, 2), 5)])
def test_a_kernel_larger_than_its_input_gives_the_convolution_and_its_gradient(hw, kernel):
  x = jax.random.normal(jax.random.key(3), (2, *hw, 6))
  big = models.conv(5, kernel, hw, jnp.float32, "c")
  plain = nn.Conv(5, (kernel, kernel))
  params = plain.init(jax.random.key(4), x)
  np.testing.assert_allclose(big.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  g = jax.random.normal(jax.random.key(5), (2, *hw, 5))
  grads = [
    jax.grad(lambda p, v, m=m: jnp.sum(m.apply(p, v) * g), argnums=(0, 1))(params, x)
    for m in (big, plain)
  ]
  for a, b in zip(*map(jax.tree.leaves, grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant,hw", [("flic", (240, 320)), ("mpii", (256, 256))])
def test_no_convolution_runs_as_xla_cpus_operand_swapped_loop(variant, hw):
  # XLA:CPU runs a convolution whose kernel exceeds its input with swapped operands
  # (`rhs_reversal` in the HLO), 30-75x slower: the 9x9 bank-2 convs at 8x and 16x.
  coarse = tiny_coarse(variant, pool_factor=16, num_joints=4)
  x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: coarse.init(jax.random.key(0), x, train=False), x)
  hlo = (
    jax.jit(lambda v, x: coarse.apply(v, x, train=False)["heatmaps"])
    .lower(variables, x)
    .compile()
    .as_text()
  )
  assert "convolution(" in hlo and "rhs_reversal" not in hlo


def test_group_norm_normalizes_every_bank_conv_in_groups_of_8():
  """norm='group': each bank conv's output is normalized per example over groups
  of 8 channels (zero mean, unit variance before the ReLU) and has its own scale
  and bias; an unknown norm is an error naming the field."""
  model = models.make_model(num_joints=3, variant="flic", width=1 / 8, norm="group")
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), maxval=255.0)
  # Jitted: the whole cascade op by op took ~10 s.
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  coarse = variables["params"]["coarse"]
  for b in range(3):
    for i, (_, f) in enumerate(models.bank_layout("flic", 1 / 8)[0]):
      assert coarse[f"bank{b}_norm{i}"]["scale"].shape == (f,)
  capture = functools.partial(
    model.apply, train=False, capture_intermediates=True, mutable=["intermediates"]
  )
  _, state = jax.jit(capture)(variables, x)
  y = state["intermediates"]["coarse"]["bank0_norm0"]["__call__"][0]  # (2, 32, 32, 16)
  g = np.asarray(y).reshape(2, -1, 2, 8)
  np.testing.assert_allclose(g.mean(axis=(1, 3)), 0.0, atol=1e-4)
  np.testing.assert_allclose(g.std(axis=(1, 3)), 1.0, atol=1e-2)
  bad = models.make_model(num_joints=3, variant="flic", width=1 / 8, norm="batch")
  with pytest.raises(ValueError, match="norm"):
    bad.init(jax.random.key(1), x, train=False)


def test_context_blocks_and_early_width():
  """early_width widens the first two convs of every bank (the maps the crop module
  reads); context_blocks adds residual 3x3 blocks after the merge. With their
  residual branches zeroed (the second norm's scale) the model is the paper's,
  parameter for parameter."""
  kw = dict(num_joints=3, variant="flic", pool_factor=4, width=1 / 8, norm="group")
  model = models.make_model(**kw, early_width=1 / 4, context_blocks=2)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), maxval=255.0)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  coarse = variables["params"]["coarse"]
  assert [coarse[f"bank0_conv{i}"]["kernel"].shape[-1] for i in range(4)] == [32, 32, 16, 64]
  for i in range(2):
    for k in range(2):
      assert coarse[f"context{i}_conv{k}"]["kernel"].shape == (3, 3, 64, 64)
  crops = jax.jit(functools.partial(model.apply, method=lambda m, x: m.coarse(x, train=False)))(
    variables, x
  )["crop_features"]
  assert [f.shape[-1] for f in crops] == [32, 32, 32, 32]

  plain = models.make_model(**kw, early_width=1 / 4)
  params = flax.core.unfreeze(variables["params"])
  for i in range(2):
    params["coarse"][f"context{i}_norm1"]["scale"] *= 0.0
    params["coarse"][f"context{i}_norm1"]["bias"] *= 0.0
  kept = {k: v for k, v in params["coarse"].items() if not k.startswith("context")}
  want = jax.jit(functools.partial(plain.apply, train=False))(
    {"params": {**params, "coarse": kept}}, x
  )
  got = jax.jit(functools.partial(model.apply, train=False))({"params": params}, x)
  np.testing.assert_allclose(got.coarse_heatmaps, want.coarse_heatmaps, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field,value", [("context_blocks", -1), ("early_width", -0.25)])
def test_bad_context_blocks_or_early_width_is_a_config_error(field, value):
  from heatpose_jax import from_config
  from heatpose_jax.configs import synthetic

  config = synthetic.get_config("tiny")
  config.model[field] = value
  with pytest.raises(from_config.ConfigError, match=f"config.model.{field}={value}"):
    from_config.check(config)


def test_head_norm_normalizes_the_heads_1x1_convs_in_groups_of_8():
  """head_norm: GroupNorm after each of the head's 1x1 convs (no conv bias, its own
  scale and bias), per example over groups of 8 channels; off (the paper's head),
  the convs keep their bias and nothing else is added."""
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), maxval=255.0)
  for head_norm in (False, True):
    net = tiny_coarse(pool_factor=4, head_norm=head_norm)
    variables = jax.jit(functools.partial(net.init, train=False))(jax.random.key(1), x)
    params = variables["params"]
    for i in range(2):
      assert ("bias" in params[f"head{i}"]) != head_norm
      assert (f"head_norm{i}" in params) == head_norm
  assert params["head_norm0"]["scale"].shape == (16,)
  capture = functools.partial(
    net.apply, train=False, capture_intermediates=True, mutable=["intermediates"]
  )
  _, state = jax.jit(capture)(variables, x)
  y = state["intermediates"]["head_norm1"]["__call__"][0]  # (2, 8, 8, 16)
  g = np.asarray(y).reshape(2, -1, 2, 8)
  np.testing.assert_allclose(g.mean(axis=(1, 3)), 0.0, atol=1e-4)
  np.testing.assert_allclose(g.std(axis=(1, 3)), 1.0, atol=1e-2)


def test_global_context_starts_as_the_identity_and_sees_the_whole_image():
  """global_context: the merged maps' mean and max through a Dense + ReLU scale and
  shift the first head layer at every cell. Its output layer starts at zero, so the
  model starts as the one without it, parameter for parameter; once trained, a cell's
  heat-map depends on pixels far outside the banks' receptive field."""
  run = functools.partial(nn.Module.apply, train=False)
  for head_norm, size in ((True, 64), (False, 160)):
    x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), maxval=255.0)
    net = tiny_coarse(pool_factor=4, head_norm=head_norm, global_context=True)
    plain = tiny_coarse(pool_factor=4, head_norm=head_norm)
    params = flax.core.unfreeze(
      jax.jit(functools.partial(net.init, train=False))(jax.random.key(1), x)["params"]
    )
    assert params["global_dense"]["kernel"].shape == (2 * 32, 32)
    assert params["global_film"]["kernel"].shape == (32, 2 * 16)
    kept = {k: v for k, v in params.items() if not k.startswith("global")}
    want = jax.jit(functools.partial(run, plain))({"params": kept}, x)["heatmaps"]
    got = jax.jit(functools.partial(run, net))({"params": params}, x)["heatmaps"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

  # Without the head's GroupNorm (whose statistics span the image too), a change in
  # the bottom-right 16x16 corner of a 160-px image reaches the top-left cell only
  # through the image-level features.
  far = x.at[:, -16:, -16:].set(255.0 - x[:, -16:, -16:])
  params["global_film"]["kernel"] = jax.random.normal(jax.random.key(2), (32, 32))
  for model, p, changes in ((plain, kept, False), (net, params, True)):
    a, b = (
      jax.jit(functools.partial(run, model))({"params": p}, im)["heatmaps"] for im in (x, far)
    )
    assert (np.abs(np.asarray(a[:, 0, 0] - b[:, 0, 0])).max() > 1e-5) == changes


def test_the_quick_starts_model_has_image_level_context_and_the_papers_does_not():
  """`synthetic.py:tiny` (the quick start) sets model.global_context; the paper-size
  and CPU study configs keep the paper's head (their committed results were trained
  without it)."""
  from heatpose_jax import from_config
  from heatpose_jax.configs import synthetic

  for arg, want in (("tiny", True), ("cpu", False), ("paper", False)):
    config = synthetic.get_config(arg)
    h, w = config.input_hw
    model = from_config.model(config)
    shapes = jax.eval_shape(
      lambda m=model, h=h, w=w: m.init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False)
    )["params"]["coarse"]
    assert ("global_film" in shapes) == want, arg
