#!/usr/bin/env python3
"""Generate the onnxruntime reference data ("goldens") the Swift tests compare against.

The Swift engine runs ONNX graphs on oneDNN; onnxruntime is the reference it must
agree with. Generating the references needs Python packages the Swift tests must not
depend on, so they are produced once, here, into the data directory and read by the
tests as plain .npy files.

Run (normally via ``bash Ops/setup.sh --goldens``):

    python3 Tests/Goldens/make_goldens.py \
        --out .featstream/goldens --models .featstream/models \
        [--samples .featstream/data/imagenet-samples]

Writes:

    ops/<case>/{model.onnx,input.npy,output.npy}   one small graph per operator pattern;
                                                   single float32 input `x`, output `y`
    models/<name>/input.npy      [4, ...] preprocessed batch in the model's own layout
    models/<name>/features.npy   [4, D] float32 at model.json's featureNode
    models/<name>/logits.npy     [4, K] (only models whose model.json has logitsNode)
    models/<name>/pixels.npy     [4, 224, 224, 3] uint8 RGB crops before normalisation
    MANIFEST.json                every case with shapes, opsets and tolerances

The output directory is built in a temporary sibling and renamed into place, so it is
always complete. Deterministic: fixed seeds, single-threaded onnxruntime, no graph
optimisation (so the references reflect plain ONNX semantics, not fused kernels).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

BATCH = 2
# Every op case re-seeds with this, so a case's data does not depend on case order.
SEED = 0
MODEL_BATCH = 4
# Suggested comparison tolerances, recorded in the manifest; whole networks accumulate
# more float reordering error than single ops.
OP_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
MODEL_TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}


# ---------------------------------------------------------------------------
# Per-op graphs
# ---------------------------------------------------------------------------

class Case:
    """Collects nodes and initializers for one graph reading ``x`` and writing ``y``."""

    def __init__(self, name: str, x_shape, description: str, opset: int = 13):
        self.name = name
        self.x_shape = list(x_shape)
        self.description = description
        self.opset = opset
        self.rng = np.random.default_rng(SEED)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value, prefix: str = "c") -> str:
        name = self._fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape, fan_in: int | None = None, gain: float = 1.0, prefix: str = "w") -> str:
        # Fan-in scaling keeps activations O(1), so absolute tolerances stay meaningful.
        fan_in = fan_in or int(np.prod(shape[1:]))
        w = self.rng.standard_normal(shape).astype(np.float32) * (gain / np.sqrt(fan_in))
        return self.const(w.astype(np.float32), prefix)

    def node(self, op: str, inputs, out: str | None = None, **attrs) -> str:
        out = out or self._fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k, group: int = 1, bias: bool = True,
             gain: float = 1.0, **attrs) -> str:
        k = (k, k) if isinstance(k, int) else tuple(k)
        w = self.weight([c_out, c_in // group, *k], gain=gain)
        inputs = [x, w]
        if bias:
            inputs.append(self.const((self.rng.standard_normal(c_out) * 0.1).astype(np.float32), "b"))
        return self.node("Conv", inputs, kernel_shape=list(k), group=group, **attrs)

    def batchnorm(self, x: str, c: int, eps: float = 1e-3) -> str:
        r = self.rng
        scale = r.uniform(0.5, 1.5, c).astype(np.float32)
        bias = (r.standard_normal(c) * 0.2).astype(np.float32)
        mean = (r.standard_normal(c) * 0.3).astype(np.float32)
        var = r.uniform(0.3, 2.0, c).astype(np.float32)
        return self.node("BatchNormalization",
                         [x, self.const(scale, "bn_scale"), self.const(bias, "bn_bias"),
                          self.const(mean, "bn_mean"), self.const(var, "bn_var")],
                         epsilon=eps)

    def clip6(self, x: str) -> str:
        return self.node("Clip", [x, self.const(np.float32(0.0), "min"),
                                  self.const(np.float32(6.0), "max")])

    def finish(self, y: str) -> onnx.ModelProto:
        # Rename the last tensor to `y` so every case has the same interface.
        for n in self.nodes:
            n.input[:] = ["y" if i == y else i for i in n.input]
            n.output[:] = ["y" if o == y else o for o in n.output]
        x_dims = ["N", *self.x_shape[1:]]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        model = helper.make_model(graph, producer_name="FeatureStream make_goldens",
                                  opset_imports=[helper.make_opsetid("", self.opset)])
        # Debian 12's libonnx (1.12) rejects IR versions newer than 8.
        model.ir_version = min(model.ir_version, 8)
        return model


def op_cases() -> list[tuple[Case, str]]:
    """Each entry is (case, name of its output tensor). Shapes stay tiny on purpose."""
    cases = []

    def add(c: Case, y: str):
        cases.append((c, y))

    X = [BATCH, 8, 12, 12]

    c = Case("conv_basic", X, "3x3 conv, pads 1, with bias")
    add(c, c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1]))

    c = Case("conv_nobias", X, "3x3 conv, pads 1, no bias input (as in Lite0)")
    add(c, c.conv("x", 8, 16, 3, bias=False, pads=[1, 1, 1, 1]))

    c = Case("conv_strided_asym_pads", X, "3x3 conv, stride 2, pads [0,0,1,1] (TF SAME)")
    add(c, c.conv("x", 8, 16, 3, strides=[2, 2], pads=[0, 0, 1, 1]))

    c = Case("conv_1x1_strided", X, "1x1 conv, stride 2, no pads attribute (ResNet shortcut)")
    add(c, c.conv("x", 8, 16, 1, strides=[2, 2]))

    c = Case("conv_dilated", X, "3x3 conv, dilation 2, pads 2")
    add(c, c.conv("x", 8, 16, 3, dilations=[2, 2], pads=[2, 2, 2, 2]))

    c = Case("conv_grouped", X, "3x3 conv, group 4")
    add(c, c.conv("x", 8, 16, 3, group=4, pads=[1, 1, 1, 1]))

    c = Case("conv_depthwise", X, "5x5 depthwise conv, stride 2, pads [1,1,2,2]")
    add(c, c.conv("x", 8, 8, 5, group=8, strides=[2, 2], pads=[1, 1, 2, 2]))

    c = Case("conv_bias_bn", X, "conv with bias then BatchNormalization eps 1e-3")
    add(c, c.batchnorm(c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1]), 16))

    c = Case("conv_nobias_bn_clip6", X, "Lite0 block: conv without bias, BN, Clip(0,6)")
    add(c, c.clip6(c.batchnorm(c.conv("x", 8, 16, 3, bias=False, pads=[1, 1, 1, 1]), 16)))

    c = Case("conv_relu", X, "conv then Relu")
    add(c, c.node("Relu", [c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])]))

    c = Case("conv_clip6", X, "conv then Clip with min 0 / max 6 as inputs")
    # Gain 3 pushes enough activations past 6 for the upper bound to matter.
    add(c, c.clip6(c.conv("x", 8, 16, 3, gain=3.0, pads=[1, 1, 1, 1])))

    c = Case("conv_add_residual", X, "conv(x) + x")
    add(c, c.node("Add", [c.conv("x", 8, 8, 3, pads=[1, 1, 1, 1]), "x"]))

    c = Case("conv_add_two_convs", X, "conv_a(x) + conv_b(x)")
    a = c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])
    b = c.conv("x", 8, 16, 1)
    add(c, c.node("Add", [a, b]))

    c = Case("maxpool", X, "MaxPool 3x3, stride 2, pads 1")
    add(c, c.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))

    c = Case("maxpool_asym_pads", X, "MaxPool 3x3, stride 2, pads [0,0,1,1] (open-nsfw)")
    add(c, c.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]))

    c = Case("avgpool", X, "AveragePool 2x2, stride 2")
    add(c, c.node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2]))

    c = Case("avgpool_pads_exclude", X, "AveragePool 3x3, stride 1, pads 1, count_include_pad 0")
    add(c, c.node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[1, 1],
                  pads=[1, 1, 1, 1], count_include_pad=0))

    c = Case("global_avgpool_flatten", X, "GlobalAveragePool then Flatten")
    add(c, c.node("Flatten", [c.node("GlobalAveragePool", ["x"])], axis=1))

    c = Case("reshape", X, "Reshape to [0, -1] (copy batch, infer rest)")
    add(c, c.node("Reshape", ["x", c.const(np.array([0, -1], dtype=np.int64), "shape")]))

    c = Case("transpose_nhwc_to_nchw", [BATCH, 12, 12, 8], "Transpose perm [0,3,1,2]; input NHWC")
    add(c, c.node("Transpose", ["x"], perm=[0, 3, 1, 2]))

    c = Case("gemm", [BATCH, 32], "Gemm transB=1 with bias C, default alpha/beta")
    add(c, c.node("Gemm", ["x", c.weight([10, 32]),
                           c.const((c.rng.standard_normal(10) * 0.1).astype(np.float32), "b")],
                  transB=1))

    c = Case("matmul", [BATCH, 32], "MatMul with a [32,10] initializer")
    add(c, c.node("MatMul", ["x", c.weight([32, 10], fan_in=32)]))

    c = Case("concat_channels", X, "Concat of two convs on axis 1")
    a = c.conv("x", 8, 6, 3, pads=[1, 1, 1, 1])
    b = c.conv("x", 8, 10, 1)
    add(c, c.node("Concat", [a, b], axis=1))

    c = Case("mul_broadcast", X, "x * per-channel [1,C,1,1] initializer")
    add(c, c.node("Mul", ["x", c.const(c.rng.uniform(-2, 2, [1, 8, 1, 1]).astype(np.float32), "s")]))

    c = Case("sigmoid", X, "Sigmoid")
    add(c, c.node("Sigmoid", ["x"]))

    c = Case("hardsigmoid", X, "HardSigmoid alpha 0.2 beta 0.5")
    add(c, c.node("HardSigmoid", ["x"], alpha=0.2, beta=0.5))

    c = Case("hardswish", X, "HardSwish (opset 14)", opset=14)
    add(c, c.node("HardSwish", ["x"]))

    c = Case("squeeze_excite", X, "GAP -> 1x1 conv -> Relu -> 1x1 conv -> Sigmoid -> Mul x")
    s = c.node("GlobalAveragePool", ["x"])
    s = c.node("Relu", [c.conv(s, 8, 2, 1)])
    s = c.node("Sigmoid", [c.conv(s, 2, 8, 1)])
    add(c, c.node("Mul", ["x", s]))

    c = Case("pad_then_conv", X, "Pad (pads as input, constant 0) then conv pads 0")
    p = c.node("Pad", ["x", c.const(np.array([0, 0, 1, 1, 0, 0, 2, 2], dtype=np.int64), "pads")],
               mode="constant")
    add(c, c.conv(p, 8, 16, 3))

    c = Case("pad_then_conv_opset9", X, "opset 9 Pad (pads attribute) then conv pads 0", opset=9)
    p = c.node("Pad", ["x"], mode="constant", pads=[0, 0, 1, 1, 0, 0, 2, 2], value=0.0)
    add(c, c.conv(p, 8, 16, 3))

    # --- issue 16: shape arithmetic folded at plan time -------------------------------------
    c = Case("shape_slice_concat_reshape", X, "Paddle-style flatten: Shape -> Slice -> Concat -> Reshape")
    sh = c.node("Shape", ["x"])
    first = c.node("Slice", [sh, c.const(np.array([0], np.int64), "st"), c.const(np.array([1], np.int64), "en")])
    target = c.node("Concat", [first, c.const(np.array([-1], np.int64), "m1")], axis=0)
    add(c, c.node("Reshape", [c.conv("x", 8, 4, 3, pads=[1, 1, 1, 1]), target]))

    c = Case("shape_gather_unsqueeze_flatten", X, "PyTorch x.view(x.size(0), -1): Shape/Gather/Unsqueeze/Concat/Reshape", opset=11)
    g = c.node("Gather", [c.node("Shape", ["x"]), c.const(np.array(0, np.int64), "i0")], axis=0)
    u = c.node("Unsqueeze", [g], axes=[0])
    add(c, c.node("Reshape", ["x", c.node("Concat", [u, c.const(np.array([-1], np.int64), "m1")], axis=0)]))

    c = Case("constant_of_shape_range_expand_cast", X,
             "constant subgraph: ConstantOfShape, Range, Cast, Expand, Squeeze folded into a per-channel Add")
    ones = c.node("ConstantOfShape", [c.const(np.array([8, 1, 1], np.int64), "shp")],
                  value=numpy_helper.from_array(np.array([1.0], np.float32)))
    ramp = c.node("Cast", [c.node("Range", [c.const(np.array(0, np.int64), "r0"), c.const(np.array(8, np.int64), "r1"),
                                            c.const(np.array(1, np.int64), "r2")])], to=1)
    ramp = c.node("Reshape", [ramp, c.const(np.array([8, 1, 1], np.int64), "rs")])
    bias = c.node("Expand", [c.node("Mul", [ramp, ones]), c.const(np.array([1, 8, 1, 1], np.int64), "ex")])
    bias = c.node("Squeeze", [c.node("Unsqueeze", [bias, c.const(np.array([0], np.int64), "ax")]),
                              c.const(np.array([0], np.int64), "ax2")])
    add(c, c.node("Add", [c.conv("x", 8, 8, 3, pads=[1, 1, 1, 1]), bias]))

    # --- affine folding into the convolution ---------------------------------------------------
    c = Case("conv_mul_add_tf_bn", X, "TF-style BatchNorm: conv then Mul [C,1,1] then Add [1,C,1,1], then Relu")
    y = c.conv("x", 8, 16, 3, bias=False, pads=[1, 1, 1, 1])
    y = c.node("Mul", [y, c.const(c.rng.uniform(0.5, 1.5, [16, 1, 1]).astype(np.float32), "s")])
    y = c.node("Add", [y, c.const(c.rng.standard_normal([1, 16, 1, 1]).astype(np.float32), "t")])
    add(c, c.node("Relu", [y]))

    c = Case("conv_sub_div_scalar_first", X, "conv, Sub scalar, Div per-channel, then 1 - y (constant first)")
    y = c.node("Sub", [c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1]), c.const(np.float32(0.3), "s")])
    y = c.node("Div", [y, c.const(c.rng.uniform(0.5, 2, [16, 1, 1]).astype(np.float32), "d")])
    add(c, c.node("Sub", [c.const(np.float32(1.0), "one"), y]))

    c = Case("batchnorm_standalone", X, "BatchNormalization on the input (not after a conv)")
    add(c, c.batchnorm("x", 8))

    c = Case("batchnorm_2d", [BATCH, 32], "BatchNormalization on [N, C]")
    add(c, c.batchnorm("x", 32))

    # --- elementwise without reference kernels ------------------------------------------------
    c = Case("conv_swish", X, "conv then x * Sigmoid(x) (SiLU as exported)")
    y = c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])
    add(c, c.node("Mul", [y, c.node("Sigmoid", [y])]))

    c = Case("swish_standalone", X, "Sigmoid(x) * x on the input")
    add(c, c.node("Mul", [c.node("Sigmoid", ["x"]), "x"]))

    c = Case("hardswish_decomposed", X, "x * HardSigmoid(x, 1/6, 0.5) after a conv")
    y = c.conv("x", 8, 16, 3, gain=3.0, pads=[1, 1, 1, 1])
    add(c, c.node("Mul", [y, c.node("HardSigmoid", [y], alpha=1 / 6, beta=0.5)]))

    c = Case("gelu_erf", X, "GELU as PyTorch exports it: Div sqrt2, Erf, Add 1, Mul x, Mul 0.5")
    y = c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])
    e = c.node("Erf", [c.node("Div", [y, c.const(np.float32(1.4142135381698608), "r2")])])
    add(c, c.node("Mul", [c.node("Mul", [y, c.node("Add", [e, c.const(np.float32(1), "one")])]), c.const(np.float32(0.5), "h")]))

    c = Case("gelu_erf_half_first", X, "GELU as (x * 0.5) * (1 + Erf(x * 0.7071))")
    e = c.node("Erf", [c.node("Mul", ["x", c.const(np.float32(0.7071067690849304), "r")])])
    add(c, c.node("Mul", [c.node("Mul", ["x", c.const(np.float32(0.5), "h")]), c.node("Add", [e, c.const(np.float32(1), "one")])]))

    c = Case("mish_decomposed", X, "x * Tanh(Softplus(x)) after a conv")
    y = c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])
    add(c, c.node("Mul", [y, c.node("Tanh", [c.node("Softplus", [y])])]))

    c = Case("mish_op", X, "Mish (opset 18)", opset=18)
    add(c, c.node("Mish", ["x"]))

    c = Case("leakyrelu_prelu", X, "LeakyRelu 0.1 then PRelu with a per-channel slope")
    y = c.node("LeakyRelu", [c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])], alpha=0.1)
    add(c, c.node("PRelu", [y, c.const(c.rng.uniform(0, 0.5, [16, 1, 1]).astype(np.float32), "slope")]))

    c = Case("binary_broadcast_computed", X, "x - GAP(x), then / (1 + GAP(x)^2), then max with 0 (computed broadcasts)")
    m = c.node("GlobalAveragePool", ["x"])
    d = c.node("Sub", ["x", m])
    q = c.node("Add", [c.node("Mul", [m, m]), c.const(np.float32(1), "one")])
    add(c, c.node("Max", [c.node("Div", [d, q]), c.const(np.float32(0), "zero")]))

    # --- more ops ---------------------------------------------------------------------------------
    c = Case("reducemean_hw_keepdims", X, "ReduceMean over H,W keepdims=1 (pooling)")
    add(c, c.node("ReduceMean", [c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])], axes=[2, 3], keepdims=1))

    c = Case("reducemean_nhwc_opset18", [BATCH, 12, 12, 8], "NHWC: Transpose, conv, Transpose back, ReduceMean axes input [1,2] (opset 18)", opset=18)
    y = c.node("Transpose", [c.conv(c.node("Transpose", ["x"], perm=[0, 3, 1, 2]), 8, 16, 3, pads=[1, 1, 1, 1])], perm=[0, 2, 3, 1])
    add(c, c.node("ReduceMean", [y, c.const(np.array([1, 2], np.int64), "axes")], keepdims=0))

    c = Case("layernorm_opset17", [BATCH, 6, 32], "LayerNormalization over the last axis", opset=17)
    add(c, c.node("LayerNormalization", ["x", c.const(c.rng.uniform(0.5, 1.5, 32).astype(np.float32), "g"),
                                         c.const(c.rng.standard_normal(32).astype(np.float32), "b")], axis=-1, epsilon=1e-5))

    c = Case("layernorm_decomposed", [BATCH, 6, 32], "LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add")
    mu = c.node("ReduceMean", ["x"], axes=[-1], keepdims=1)
    d = c.node("Sub", ["x", mu])
    var = c.node("ReduceMean", [c.node("Pow", [d, c.const(np.float32(2), "two")])], axes=[-1], keepdims=1)
    den = c.node("Sqrt", [c.node("Add", [var, c.const(np.float32(1e-5), "eps")])])
    y = c.node("Mul", [c.node("Div", [d, den]), c.const(c.rng.uniform(0.5, 1.5, 32).astype(np.float32), "g")])
    add(c, c.node("Add", [y, c.const(c.rng.standard_normal(32).astype(np.float32), "b")]))

    c = Case("softmax_last", [BATCH, 10], "Softmax over the last axis")
    add(c, c.node("Softmax", ["x"], axis=-1))

    c = Case("softmax_channels", X, "Softmax over channels of a conv output (opset 13)")
    add(c, c.node("Softmax", [c.conv("x", 8, 16, 1)], axis=1))

    c = Case("split_concat", X, "Split channels 3/5 (opset 13 split input), convs, Concat")
    a, b = "split_a", "split_b"
    c.nodes.append(helper.make_node("Split", ["x", c.const(np.array([3, 5], np.int64), "sp")], [a, b], axis=1, name="split"))
    add(c, c.node("Concat", [c.conv(a, 3, 4, 3, pads=[1, 1, 1, 1]), c.conv(b, 5, 6, 1)], axis=1))

    c = Case("split_equal_opset11", X, "Split into two equal halves (opset 11), Add", opset=11)
    c.nodes.append(helper.make_node("Split", ["x"], ["h1", "h2"], axis=1, name="split"))
    add(c, c.node("Add", ["h1", "h2"]))

    c = Case("slice_channels", X, "Slice x[:, 2:6] of a computed tensor")
    add(c, c.node("Slice", [c.conv("x", 8, 16, 1), c.const(np.array([2], np.int64), "s"), c.const(np.array([6], np.int64), "e"),
                            c.const(np.array([1], np.int64), "a")]))

    c = Case("maxpool_ceil", [BATCH, 8, 13, 13], "MaxPool 3x3 stride 2 ceil_mode=1 (SqueezeNet, GoogLeNet)")
    add(c, c.node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))

    c = Case("global_maxpool", X, "GlobalMaxPool")
    add(c, c.node("GlobalMaxPool", ["x"]))

    c = Case("pad_reflect", X, "reflect Pad 2/1 on H,W")
    add(c, c.node("Pad", ["x", c.const(np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64), "p")], mode="reflect"))

    c = Case("pad_edge_then_conv", X, "edge Pad then conv")
    add(c, c.conv(c.node("Pad", ["x", c.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p")], mode="edge"), 8, 8, 3))

    c = Case("pad_constant_value", X, "constant Pad with value 0.5 then MaxPool")
    p = c.node("Pad", ["x", c.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p"), c.const(np.float32(0.5), "v")], mode="constant")
    add(c, c.node("MaxPool", [p], kernel_shape=[2, 2], strides=[2, 2]))

    c = Case("resize_nearest_x2", X, "Resize nearest x2, asymmetric/floor (PyTorch Upsample)")
    add(c, c.node("Resize", ["x", "", c.const(np.array([1, 1, 2, 2], np.float32), "sc")], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor"))

    c = Case("resize_linear_sizes", X, "Resize linear half_pixel to sizes 18x18")
    add(c, c.node("Resize", ["x", "", "", c.const(np.array([BATCH, 8, 18, 18], np.int64), "sz")], mode="linear",
                  coordinate_transformation_mode="half_pixel"))

    c = Case("upsample_opset9", X, "Upsample nearest x2 (opset 9)", opset=9)
    add(c, c.node("Upsample", ["x", c.const(np.array([1, 1, 2, 2], np.float32), "sc")], mode="nearest"))

    c = Case("matmul_4d_channels_last", [BATCH, 5, 5, 16], "MatMul of [N,H,W,C] by [C,M] plus bias (ConvNeXt Linear)")
    y = c.node("MatMul", ["x", c.weight([16, 24], fan_in=16)])
    add(c, c.node("Add", [y, c.const(c.rng.standard_normal(24).astype(np.float32), "b")]))

    # Batch 1 on purpose: that is where the engine writes Concat inputs straight into their slice of
    # the output (Sources/Backbone/ConcatPlacement.swift); OpGoldenTests checks which Concats copy.
    c = Case("concat_in_place", [1, 8, 12, 12],
             "batch-1 Concats: a DenseNet-style prefix chain, a tensor two Concats want, a pooled input, "
             "one made by a Reshape, a 10-channel last input, a Concat of a Concat")
    a = c.node("Relu", [c.conv("x", 8, 16, 3, pads=[1, 1, 1, 1])])
    b = c.conv(a, 16, 16, 1)
    prefix = c.node("Concat", [a, b], out="cat_prefix", axis=1)
    d = c.conv(c.node("Relu", [c.batchnorm(prefix, 32)]), 32, 16, 3, pads=[1, 1, 1, 1])
    root = c.node("Concat", [a, b, d], out="cat_root", axis=1)
    conflict = c.node("Concat", [a, c.conv(a, 16, 16, 3, pads=[1, 1, 1, 1])], out="cat_conflict", axis=1)
    p = c.node("MaxPool", [root], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    r = c.node("Reshape", [c.conv(root, 48, 16, 1), c.const(np.array([0, 16, 12, 12], np.int64), "shape")])
    tail = c.node("Concat", [p, r, c.conv(conflict, 32, 10, 1)], out="cat_tail", axis=1)
    add(c, c.node("Concat", [tail, b], axis=1))

    return cases


def error_cases() -> list[tuple[str, onnx.ModelProto, str]]:
    """Models the engine must refuse, with what the refusal must name (no goldens: nothing runs)."""
    out = []
    c = Case("unsupported_many", [BATCH, 8, 12, 12], "three unsupported op types in two branches")
    r = c.node("Hardmax", [c.node("Round", ["x"], out="round_node")], out="hardmax_node")
    out.append((c.name, c.finish(c.node("Add", [r, c.node("Sign", ["x"], out="sign_node")])), "Round, Hardmax, Sign"))
    c = Case("reference_kernel", [BATCH, 8, 12, 12], "ReduceSum over channels: oneDNN has only its reference kernel")
    out.append((c.name, c.finish(c.node("ReduceSum", ["x", c.const(np.array([1], np.int64), "ax")], keepdims=1)), "ReduceSum"))
    return out


def make_error_models(root: Path) -> list[dict]:
    entries = []
    for name, model, expect in error_cases():
        d = root / "errors" / name
        d.mkdir(parents=True)
        onnx.save(model, d / "model.onnx")
        np.save(d / "input.npy", np.random.default_rng(SEED).standard_normal([BATCH, 8, 12, 12]).astype(np.float32))
        entries.append({"name": name, "dir": f"errors/{name}", "expect": expect})
    return entries


def session(model_bytes: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def make_op_goldens(root: Path) -> list[dict]:
    entries = []
    for case, y in op_cases():
        model = case.finish(y)
        x = np.random.default_rng(SEED).standard_normal(case.x_shape).astype(np.float32)
        (out,) = session(model.SerializeToString()).run(["y"], {"x": x})
        out = np.ascontiguousarray(out, dtype=np.float32)
        # Record the concrete output shape (batch stays symbolic) for readers that want it.
        dims = model.graph.output[0].type.tensor_type.shape.dim
        for i, d in enumerate(out.shape):
            dim = dims.add()
            if i == 0:
                dim.dim_param = "N"
            else:
                dim.dim_value = d
        onnx.checker.check_model(model, full_check=True)

        d = root / "ops" / case.name
        d.mkdir(parents=True)
        onnx.save(model, d / "model.onnx")
        np.save(d / "input.npy", x)
        np.save(d / "output.npy", out)
        entries.append({
            "name": case.name,
            "dir": f"ops/{case.name}",
            "description": case.description,
            "opset": case.opset,
            "ops": [n.op_type for n in model.graph.node],
            "input": {"name": "x", "shape": list(x.shape)},
            "output": {"name": "y", "shape": list(out.shape)},
            "files": ["model.onnx", "input.npy", "output.npy"],
            **OP_TOLERANCE,
        })
    return entries


# ---------------------------------------------------------------------------
# Real-model goldens
# ---------------------------------------------------------------------------

def sample_images(samples_dir: Path | None) -> list[Path]:
    if samples_dir is None or not samples_dir.is_dir():
        import foolbox  # only as a fallback when setup has not copied the samples yet
        samples_dir = Path(foolbox.__file__).parent / "data"
    paths = sorted(Path(p) for p in glob.glob(str(samples_dir / "imagenet_*.jpg")))
    if len(paths) < MODEL_BATCH:
        sys.exit(f"error: need {MODEL_BATCH} imagenet_*.jpg in {samples_dir}, found {len(paths)}")
    return paths[:MODEL_BATCH]


def crop_pixels(path: Path, pp: dict) -> np.ndarray:
    """Resize the shorter side, centre crop; same rounding as check_lite0_imagenet.py."""
    if pp.get("filter", "bilinear") != "bilinear":
        sys.exit(f"error: unsupported preprocess filter {pp['filter']!r}")
    short, crop = int(pp["resizeShorterSide"]), int(pp["crop"])
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = short / min(w, h)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    # Pillow's bilinear is antialiased when shrinking, which a Swift resize need not
    # match exactly; that is why input.npy (not the JPEG) is the model goldens' input.
    img = img.resize(size, Image.BILINEAR)
    left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8)


def normalise(pixels: np.ndarray, pp: dict, layout: str) -> np.ndarray:
    x = pixels.astype(np.float32)
    order = pp.get("colorOrder", "RGB").upper()
    if order == "BGR":
        x = x[..., ::-1]
    elif order != "RGB":
        sys.exit(f"error: unsupported colorOrder {order!r}")
    mean = np.asarray(pp.get("mean", [0, 0, 0]), dtype=np.float32)
    std = np.asarray(pp.get("std", [1, 1, 1]), dtype=np.float32)
    x = (x - mean) / std
    if layout.upper() == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout.upper() != "NHWC":
        sys.exit(f"error: unsupported input layout {layout!r}")
    return np.ascontiguousarray(x, dtype=np.float32)


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Expose intermediate tensors as graph outputs (on a copy; the file is untouched)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    produced = {o for n in m.graph.node for o in n.output}
    for name in names:
        if name in existing:
            continue
        if name not in produced:
            sys.exit(f"error: featureNode {name!r} is not a tensor in {model.graph.name}")
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return m


def make_model_goldens(root: Path, models_dir: Path, samples: list[Path]) -> list[dict]:
    entries = []
    for name in ("efficientnet-lite0", "open-nsfw"):
        mdir = models_dir / name
        cfg_path = mdir / "model.json"
        if not cfg_path.is_file():
            sys.exit(f"error: {cfg_path} missing; run Ops/setup.sh first")
        cfg = json.loads(cfg_path.read_text())
        pp, layout = cfg["preprocess"], cfg["input"]["layout"]
        model = onnx.load(mdir / cfg.get("onnx", "model.onnx"))

        pixels = np.stack([crop_pixels(p, pp) for p in samples])
        x = normalise(pixels, pp, layout)

        wanted = {"features": cfg["featureNode"]}
        if cfg.get("logitsNode"):
            wanted["logits"] = cfg["logitsNode"]
        sess = session(with_outputs(model, list(wanted.values())).SerializeToString())
        results = sess.run(list(wanted.values()), {cfg["input"]["name"]: x})

        d = root / "models" / name
        d.mkdir(parents=True)
        np.save(d / "input.npy", x)
        np.save(d / "pixels.npy", pixels)
        files = {"input": "input.npy", "pixels": "pixels.npy"}
        shapes = {}
        for key, value in zip(wanted, results):
            # open-nsfw's pool output is [N,1024,1,1]; consumers want one row per image.
            value = np.ascontiguousarray(value.reshape(MODEL_BATCH, -1), dtype=np.float32)
            np.save(d / f"{key}.npy", value)
            files[key] = f"{key}.npy"
            shapes[key] = list(value.shape)
        entries.append({
            "name": name,
            "dir": f"models/{name}",
            "modelDir": f"models/{name}",
            "modelSha256": hashlib.sha256((mdir / cfg.get("onnx", "model.onnx")).read_bytes()).hexdigest(),
            "inputName": cfg["input"]["name"],
            "inputLayout": layout,
            "inputShape": list(x.shape),
            "featureNode": cfg["featureNode"],
            "logitsNode": cfg.get("logitsNode"),
            "shapes": shapes,
            "files": files,
            "images": [p.name for p in samples],
            "preprocess": pp,
            "pixelsNote": "uint8 RGB [N,H,W,3] after resize+crop, before colour order/normalisation",
            **MODEL_TOLERANCE,
        })
    return entries


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="goldens directory to (re)create")
    ap.add_argument("--models", type=Path, required=True, help="directory holding <name>/model.json")
    ap.add_argument("--samples", type=Path, default=None,
                    help="imagenet_*.jpg directory (default: <models>/../data/imagenet-samples, "
                         "else foolbox's bundled copy)")
    ap.add_argument("--ops-only", action="store_true", help="skip the real-model goldens")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        ops = make_op_goldens(tmp)
        errors = make_error_models(tmp)
        models = []
        if not args.ops_only:
            samples_dir = args.samples or args.models.parent / "data" / "imagenet-samples"
            models = make_model_goldens(tmp, args.models, sample_images(samples_dir))
        manifest = {
            "generator": "Tests/Goldens/make_goldens.py",
            "seed": SEED,
            "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                         "numpy": np.__version__},
            "notes": "All .npy are little-endian float32 C-order except pixels.npy (uint8). "
                     "Op inputs are default_rng(0).standard_normal(shape).",
            "ops": ops,
            "errors": errors,
            "models": models,
        }
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    print(f"goldens: {len(ops)} op cases, {len(models)} models -> {out} "
          f"({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
