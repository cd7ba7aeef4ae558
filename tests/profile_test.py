"""The profile breakdown (studies/profile.py): categories from the library's named
scopes, the HLO model on a GPU-form module written here, and the tiny joint train
step compiled, traced and attributed on the CPU. Times are never asserted, only
that they are attributed."""

import math
import os

import jax
import jax.numpy as jnp
import pytest

from heatpose_jax.model import models
from studies import benchmark, profile

# A module as XLA:GPU prints it: cuDNN and cuBLAS custom calls, a gather fusion,
# a layout copy without an op_name, a while loop, and the stack frame tables
# (the classifier does not read them).
GPU_HLO = """HloModule jit_step, is_scheduled=true

FileNames
1 "/x/heatpose_jax/model/models.py"

FunctionNames
1 "crop_windows"

FileLocations
1 {file_name_id=1 function_name_id=1 line=10 end_line=10 column=1 end_column=2}

StackFrames
1 {file_location_id=1 parent_frame_id=1}

%fused_gather (param_0.1: f32[8,64,64,16], param_1.1: s32[128,4]) -> f32[128,16,16,16] {
  %param_0.1 = f32[8,64,64,16]{3,2,1,0} parameter(0)
  %param_1.1 = s32[128,4]{1,0} parameter(1)
  ROOT %gather.1 = f32[128,16,16,16]{3,2,1,0} gather(%param_0.1, %param_1.1), offset_dims={1,2,3}, slice_sizes={1,16,16,16}, metadata={op_name="jit(step)/jvp(Cascade)/hp_crop/vmap(vmap())/gather" stack_frame_id=1}
}

%fused_warp (param_0.2: f32[8,64,64,3]) -> f32[8,64,64,3] {
  %param_0.2 = f32[8,64,64,3]{3,2,1,0} parameter(0)
  ROOT %multiply.1 = f32[8,64,64,3]{3,2,1,0} multiply(%param_0.2, %param_0.2), metadata={op_name="jit(step)/hp_augmentation/mul"}
}

%body (p.1: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p.1 = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p.1), index=0
  %v = f32[8]{0} get-tuple-element(%p.1), index=1
  %add.9 = f32[8]{0} add(%v, %v), metadata={op_name="jit(step)/hp_optimizer/add"}
  ROOT %t.2 = (s32[], f32[8]{0}) tuple(%i, %add.9)
}

%cond (p.2: (s32[], f32[8])) -> pred[] {
  %p.2 = (s32[], f32[8]{0}) parameter(0)
  %j = s32[] get-tuple-element(%p.2), index=0
  %c = s32[] constant(4)
  ROOT %lt = pred[] compare(%j, %c), direction=LT
}

ENTRY %main.1 (x: bf16[8,64,64,3], k: bf16[5,5,3,16], idx: s32[128,4], a: f32[16,64], b: f32[64,32], t: (s32[], f32[8])) -> f32[128,16,16,16] {
  %x = bf16[8,64,64,3]{3,2,1,0} parameter(0)
  %k = bf16[5,5,3,16]{3,2,1,0} parameter(1)
  %idx = s32[128,4]{1,0} parameter(2)
  %a = f32[16,64]{1,0} parameter(3)
  %b = f32[64,32]{1,0} parameter(4)
  %t = (s32[], f32[8]{0}) parameter(5)
  %cudnn-conv.1 = (bf16[8,64,64,16]{3,2,1,0}, u8[1024]{0}) custom-call(%x, %k), window={size=5x5 pad=2_2x2_2}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/jvp(Cascade)/coarse/hp_conv/bank0_conv0/conv_general_dilated"}, backend_config={"cudnn_conv_backend_config":{}}
  %conv.out = bf16[8,64,64,16]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %copy.7 = f32[8,64,64,16]{3,2,1,0} convert(%conv.out)
  %gather_fusion.1 = f32[128,16,16,16]{3,2,1,0} fusion(%copy.7, %idx), kind=kLoop, calls=%fused_gather, metadata={op_name="jit(step)/jvp(Cascade)/hp_crop/vmap(vmap())/gather"}
  %gemm.1 = (f32[16,32]{1,0}, s8[4]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}, metadata={op_name="jit(step)/transpose(jvp(Cascade))/fine/dot_general"}
  %warp_fusion = f32[8,64,64,3]{3,2,1,0} fusion(%x), kind=kLoop, calls=%fused_warp
  %while.3 = (s32[], f32[8]{0}) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT %r = f32[128,16,16,16]{3,2,1,0} copy(%gather_fusion.1)
}
"""


@pytest.mark.parametrize(
  "op_name, opcode, expected",
  [
    ("jit(step)/jvp(Cascade)/coarse/hp_conv/bank0_conv0/add", "add", "conv_forward"),
    ("jit(step)/transpose(jvp(Cascade))/coarse/hp_conv/bank0_norm0/mul", "mul", "conv_backward"),
    ("jit(step)/transpose(jvp(Cascade))/coarse/hp_pooling/mul", "multiply", "pooling"),
    ("jit(step)/jvp(Cascade)/coarse/hp_upscale_add/add", "add", "upscale_add"),
    # A scope wins over the opcode: the CPU's blur is a matrix product.
    (
      "jit(step)/jvp(Cascade)/coarse/hp_lcn_pyramid/ih,bhwc->biwc/dot_general",
      "dot",
      "lcn_pyramid",
    ),
    ("jit(step)/jvp(Cascade)/hp_crop/vmap(vmap())/gather", "gather", "crop_gather"),
    ("jit(step)/transpose(jvp(Cascade))/hp_crop/vmap(vmap())/scatter-add", "add", "crop_scatter"),
    ("jit(step)/jvp(Cascade)/hp_crop/scatter", "scatter", "crop_scatter"),
    ("jit(step)/hp_augmentation/jit(_threefry_split)/while", "add", "augmentation"),
    # A scope inside a transformation's name (the fine targets, under value_and_grad).
    ("jit(step)/jvp(hp_targets)/exp", "exponential", "targets"),
    ("jit(step)/hp_optimizer/jit(_where)/select_n", "select", "optimizer"),
    # Outside every scope: convolutions by opcode, the rest is 'other'.
    ("jit(step)/jvp(Cascade)/fine/dot_general", "dot", "conv_forward"),
    ("jit(step)/transpose(jvp(Cascade))/fine/conv", "convolution", "conv_backward"),
    ("jit(step)/jvp()/reduce_sum", "reduce", "other"),
    ("", "copy", "other"),
    # The innermost scope decides.
    ("jit(step)/jvp(Cascade)/hp_conv/hp_pooling/reduce_max", "reduce", "pooling"),
    # Function, module and variable names are not scopes.
    ("jit(step)/jvp(Cascade)/coarse/crop_windows/max_pool_2x2/merged/add", "add", "other"),
    ("jit(step)/jvp(Cascade)/xhp_conv/hp_convolution/add", "add", "other"),
  ],
)
def test_category_from_op_name(op_name, opcode, expected):
  instr = profile.Instr("x.1", opcode, "f32[4]{0}", [], "", op_name=op_name)
  assert profile.classify(instr) == expected


def test_every_scope_is_a_category():
  assert set(profile.SCOPES.values()) <= set(profile.CATEGORIES)
  assert all(name.startswith("hp_") for name in profile.SCOPES)


def test_library_functions_carry_their_scopes_whatever_they_are_called():
  """The library's pool and crop, called from a function with another name, keep
  their categories; a scope named after the old rules' functions counts for nothing."""

  def renamed(fmap, origin):
    pooled = models.max_pool_2x2(fmap)
    crops = models.crop_windows(fmap, origin, 1, 4)
    with jax.named_scope("crop_windows"):  # no library scope: 'other'
      lookalike = jnp.sin(fmap)
    return pooled.sum() + (crops**2).sum() + lookalike.sum()

  fmap = jnp.ones((2, 8, 8, 3))
  origin = jnp.array([[[0, 0], [4, 2]], [[2, 2], [6, 6]]], jnp.int32)
  text = jax.jit(jax.grad(renamed)).lower(fmap, origin).compile().as_text()
  module = profile.parse_hlo(text)
  found = {profile.classify(i) for i in module.by_name.values() if "hp_" in i.op_name}
  assert {"pooling", "crop_gather", "crop_scatter"} <= found
  lookalike = [i for i in module.by_name.values() if "crop_windows" in i.op_name]
  assert lookalike and {profile.classify(i) for i in lookalike} == {"other"}
  rows = profile.breakdown(profile.cost_units(module), timed=False)
  assert all(r["bytes_share"] > 0 for r in rows if r["category"] in found), rows


def _unit(units, name):
  return next(u for u in units if u.instr.name == name)


def test_gpu_form_module_costs_and_categories():
  module = profile.parse_hlo(GPU_HLO)
  assert module.entry == "main.1"
  units = profile.cost_units(module)
  names = {u.instr.name for u in units}
  assert names == {"cudnn-conv.1", "copy.7", "gather_fusion.1", "gemm.1", "warp_fusion", "r"} | {
    "add.9",
    "lt",
  }
  conv = _unit(units, "cudnn-conv.1")
  assert conv.flops == 2 * (8 * 64 * 64 * 16) * (5 * 5 * 3)
  # Operands plus the result; the cuDNN scratch buffer is not traffic.
  assert conv.bytes == 2 * (8 * 64 * 64 * 3 + 5 * 5 * 3 * 16 + 8 * 64 * 64 * 16)
  assert conv.weights == {"conv_forward": 1.0}
  assert _unit(units, "gemm.1").flops == 2 * 16 * 32 * 64
  # A matrix product outside every scope is a convolution (here of the backward pass).
  assert _unit(units, "gemm.1").weights == {"conv_backward": 1.0}
  # The gather reads only its windows of the feature map.
  gather = _unit(units, "gather_fusion.1")
  window_bytes = 128 * 16 * 16 * 16 * 4
  assert gather.bytes == 2 * window_bytes + 128 * 4 * 4
  assert gather.weights == {"crop_gather": 1.0}
  # A conversion without an op_name takes the category of its consumer.
  assert _unit(units, "copy.7").weights == {"crop_gather": 1.0}
  assert _unit(units, "warp_fusion").weights == {"augmentation": 1.0}
  loop = _unit(units, "add.9")
  assert loop.count == 4 and loop.flops == 4 * 8 and loop.weights == {"optimizer": 1.0}
  rows = profile.breakdown(units, timed=False)
  assert [r["category"] for r in rows] == list(profile.CATEGORIES)
  assert math.isclose(sum(r["flops_share"] for r in rows), 1.0)
  assert math.isclose(sum(r["bytes_share"] for r in rows), 1.0)
  assert all(r["time_share"] is None for r in rows)
  # Trace events: a GPU kernel named after its fusion, a cuDNN kernel by its
  # hlo_op stat, one by XLA's annotation text, and one that is no unit.
  match = profile.make_matcher(units)
  assert match("gather_fusion_1", ()) is gather
  assert match("sm90_xmma_fprop_implicit_gemm", [("hlo_op", "cudnn-conv.1")]) is conv
  assert match(
    "kernel", [("tf_op", "jit_step/x:#hlo_op=gemm.1,hlo_module=jit_step#")]
  ).instr.name == ("gemm.1")
  assert match("MemcpyH2D", [("bytes", 12)]) is None


def test_tiny_joint_step_every_category_has_a_share(tmp_path):
  config = benchmark.model_config("flic", pool=8, dtype="float32", batch_size=8, tiny=True)
  report = profile.run_profile(
    config, ["joint"], output_dir=str(tmp_path), command="test", steps=1, warmup=0
  )
  (r,) = report["targets"]
  assert r["named_scopes"] and os.path.exists(r["hlo"]) and r["xplane"].endswith(".xplane.pb")
  assert r["trace"]["events"] > 0 and r["totals"]["time_ns"] > 0 and r["traced_calls"] == 1
  assert r["step_ms"] > 0 and r["traced_step_ms"] > 0 and r["xla"]["flops"] > 0
  # Our FLOP model counts padding taps, XLA's does not: close, not equal.
  assert 0.8 < r["totals"]["flops"] / r["xla"]["flops"] < 1.4
  rows = {c["category"]: c for c in r["categories"]}
  assert list(rows) == list(profile.CATEGORIES)
  for key in ("flops_share", "bytes_share", "time_share"):
    assert all(c[key] is not None and c[key] >= 0 for c in rows.values()), key
    assert sum(c[key] for c in rows.values()) == pytest.approx(1.0), key
  # Every part of the step is found: each category moves bytes.
  assert all(c["bytes_share"] > 0 for c in rows.values()), {
    k: c["bytes_share"] for k, c in rows.items()
  }
  assert rows["conv_forward"]["flops_share"] > 0.4 and rows["conv_backward"]["flops_share"] > 0.15
  md = (tmp_path / "profile.md").read_text()
  assert all(f"| {c} |" in md for c in profile.CATEGORIES)
  assert "## joint train step" in md and "Heaviest units" in md
  # The saved files are enough to attribute the run again (what a device call returns).
  again = profile.reanalyze(str(tmp_path), str(tmp_path / "again"))
  assert again["targets"][0]["categories"] == r["categories"]
  assert (tmp_path / "again" / "profile.md").exists()
