#!/usr/bin/env python3
"""Build the engine's model zoo: common CNN families exported the common ways, with random weights.

Each model is written with onnx.helper the way its usual exporter writes it (PyTorch: Conv +
BatchNormalization nodes, `x * Sigmoid(x)` for SiLU, GELU as Div/Erf/Add/Mul/Mul, `x.view(x.size(0), -1)`
as Shape/Gather/Unsqueeze/Concat/Reshape; TensorFlow: NHWC input with Transpose, BatchNorm as a
per-channel Mul and Add, ReduceMean over H and W). Weights are seeded random (He-scaled, so
activations stay O(1) through depth); nothing is downloaded and nothing large is checked in.

Usage (normally via ``bash Ops/setup.sh --goldens``):

    python3 Ops/models/make_zoo.py --out .featstream/zoo [--goldens] [--only NAME ...]

Writes <out>/<name>/{model.onnx,model.json} and, with --goldens, input.npy and features.npy beside them
(onnxruntime, one thread, no graph optimisation, batch 1, seeded standard-normal input).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 16


class Net:
    """Collects nodes and initializers; helpers mirror the layers of the usual model code."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, value, prefix: str = "c") -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=None, group=1, bias=True, gain=2.0, **attrs):
        k2 = (k, k) if isinstance(k, int) else tuple(k)
        pad = (k2[0] // 2) if pad is None else pad
        fan_in = cin // group * k2[0] * k2[1]
        w = (self.rng.standard_normal([cout, cin // group, *k2]) * np.sqrt(gain / fan_in)).astype(np.float32)
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const((self.rng.standard_normal(cout) * 0.05).astype(np.float32), "b"))
        pads = pad if isinstance(pad, list) else [pad] * 4
        return self.node("Conv", inputs, kernel_shape=list(k2), strides=[stride, stride], pads=pads, group=group, **attrs)

    def bn_params(self, c, gamma=(0.7, 1.2)):
        r = self.rng
        return (r.uniform(*gamma, c).astype(np.float32), (r.standard_normal(c) * 0.1).astype(np.float32),
                (r.standard_normal(c) * 0.1).astype(np.float32), r.uniform(0.6, 1.4, c).astype(np.float32))

    def bn(self, x, c, eps=1e-5, gamma=(0.7, 1.2)):
        scale, bias, mean, var = self.bn_params(c, gamma)
        return self.node("BatchNormalization", [x, self.const(scale, "gamma"), self.const(bias, "beta"),
                                                self.const(mean, "mean"), self.const(var, "var")], epsilon=eps)

    def cbr(self, x, cin, cout, k, stride=1, group=1, act="Relu", eps=1e-5, gamma=(0.7, 1.2), pad=None):
        y = self.bn(self.conv(x, cin, cout, k, stride, group=group, bias=False, pad=pad), cout, eps, gamma)
        return self.act(y, act)

    def act(self, y, act):
        if act == "Relu":
            return self.node("Relu", [y])
        if act == "Relu6":
            return self.node("Clip", [y, self.const(np.float32(0), "lo"), self.const(np.float32(6), "hi")])
        if act == "SiLU":  # PyTorch's SiLU before opset 14 exports as x * Sigmoid(x)
            return self.node("Mul", [y, self.node("Sigmoid", [y])])
        if act == "HardSwish":
            return self.node("HardSwish", [y])
        if act is None:
            return y
        raise ValueError(act)

    def gap(self, x):
        return self.node("GlobalAveragePool", [x])

    def flatten(self, x):
        return self.node("Flatten", [x], axis=1)

    def linear(self, x, cin, cout):
        w = (self.rng.standard_normal([cout, cin]) / np.sqrt(cin)).astype(np.float32)
        return self.node("Gemm", [x, self.const(w, "fc_w"), self.const(np.zeros(cout, np.float32), "fc_b")], transB=1)

    def se(self, x, c, squeeze, inner_act="Relu", gate="Sigmoid"):
        s = self.gap(x)
        s = self.act(self.conv(s, c, squeeze, 1, pad=0), inner_act)
        s = self.conv(s, squeeze, c, 1, pad=0)
        s = self.node(gate, [s]) if gate == "Sigmoid" else self.node("HardSigmoid", [s], alpha=1 / 6, beta=0.5)
        return self.node("Mul", [x, s])

    def model(self, x_name, x_shape, features, opset, dynamic_batch="N", extra_outputs=()):
        dims = [dynamic_batch, *x_shape[1:]]
        graph = helper.make_graph(
            self.nodes, self.name, [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (features, *extra_outputs)],
            initializer=self.inits)
        m = helper.make_model(graph, producer_name="FeatureStream make_zoo", opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = min(m.ir_version, 8)
        return m


# ---------------------------------------------------------------------------------------------
# The families
# ---------------------------------------------------------------------------------------------

def resnet50(seed):
    """torchvision ResNet-50 v1.5 (stride on the 3x3), BatchNormalization nodes kept, opset 11."""
    n = Net("resnet50_v1_5", seed)
    x = n.cbr("input", 3, 64, 7, 2)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            out = width * 4
            y = n.cbr(x, cin, width, 1)
            y = n.cbr(y, width, width, 3, stride)
            y = n.bn(n.conv(y, width, out, 1, bias=False), out, gamma=(0.2, 0.4))
            short = x if (b > 0) else n.bn(n.conv(x, cin, out, 1, stride, bias=False), out)
            x = n.node("Relu", [n.node("Add", [y, short])])
            cin = out
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 11, extra_outputs=[n.linear(f, 2048, 1000)]), f


def mobilenet_v2(seed):
    """torchvision MobileNetV2 as torch.onnx exports it: BatchNorm folded into conv biases, Clip(0, 6), opset 13."""
    n = Net("mobilenet_v2", seed)

    def cb(x, cin, cout, k, stride=1, group=1, act="Relu6"):  # folded BN: conv with bias
        return n.act(n.conv(x, cin, cout, k, stride, group=group, gain=2.0), act)

    x = cb("input", 3, 32, 3, 2)
    cin = 32
    for t, c, reps, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(reps):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = cb(x, cin, hidden, 1) if t != 1 else x
            y = cb(y, hidden, hidden, 3, stride, group=hidden)
            y = n.conv(y, hidden, c, 1, gain=0.5)
            x = n.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = cb(x, cin, 1280, 1)
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 13), f


def mobilenet_v3_large(seed):
    """torchvision MobileNetV3-Large: HardSwish (opset 14), SE with HardSigmoid gate, features after the 1280 Linear."""
    n = Net("mobilenet_v3_large", seed)
    x = n.cbr("input", 3, 16, 3, 2, act="HardSwish", eps=1e-3)
    cin = 16
    cfg = [(3, 16, 16, False, "Relu", 1), (3, 64, 24, False, "Relu", 2), (3, 72, 24, False, "Relu", 1),
           (5, 72, 40, True, "Relu", 2), (5, 120, 40, True, "Relu", 1), (5, 120, 40, True, "Relu", 1),
           (3, 240, 80, False, "HardSwish", 2), (3, 200, 80, False, "HardSwish", 1), (3, 184, 80, False, "HardSwish", 1),
           (3, 184, 80, False, "HardSwish", 1), (3, 480, 112, True, "HardSwish", 1), (3, 672, 112, True, "HardSwish", 1),
           (5, 672, 160, True, "HardSwish", 2), (5, 960, 160, True, "HardSwish", 1), (5, 960, 160, True, "HardSwish", 1)]
    for k, exp, out, se, act, s in cfg:
        y = n.cbr(x, cin, exp, 1, act=act, eps=1e-3) if exp != cin else x
        y = n.cbr(y, exp, exp, k, s, group=exp, act=act, eps=1e-3)
        if se:
            y = n.se(y, exp, ((exp // 4 + 4) // 8) * 8, gate="HardSigmoid")
        y = n.cbr(y, exp, out, 1, act=None, eps=1e-3, gamma=(0.3, 0.6))
        x = n.node("Add", [x, y]) if s == 1 and cin == out else y
        cin = out
    x = n.cbr(x, cin, 960, 1, act="HardSwish", eps=1e-3)
    f = n.node("HardSwish", [n.linear(n.flatten(n.gap(x)), 960, 1280)])
    return n.model("input", [1, 3, 224, 224], f, 14), f


def efficientnet_b0(seed):
    """EfficientNet-B0 (timm/torchvision): SiLU as x * Sigmoid(x), SE with SiLU inside, opset 12."""
    n = Net("efficientnet_b0", seed)
    x = n.cbr("input", 3, 32, 3, 2, act="SiLU", eps=1e-3)
    cin = 32
    for e, k, s, c, reps in [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                             (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]:
        for i in range(reps):
            stride = s if i == 0 else 1
            hidden = cin * e
            y = n.cbr(x, cin, hidden, 1, act="SiLU", eps=1e-3) if e != 1 else x
            y = n.cbr(y, hidden, hidden, k, stride, group=hidden, act="SiLU", eps=1e-3)
            y = n.se(y, hidden, max(1, cin // 4), inner_act="SiLU")
            y = n.cbr(y, hidden, c, 1, act=None, eps=1e-3, gamma=(0.3, 0.6))
            x = n.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = n.cbr(x, cin, 1280, 1, act="SiLU", eps=1e-3)
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 12), f


def regnety_800mf(seed):
    """RegNetY-800MF (torchvision): group width 16, SE 0.25 of the block input, opset 13."""
    n = Net("regnety_800mf", seed)
    x = n.cbr("input", 3, 32, 3, 2)
    cin = 32
    for width, depth in zip([64, 144, 320, 784], [1, 3, 8, 2]):
        for i in range(depth):
            stride = 2 if i == 0 else 1
            y = n.cbr(x, cin, width, 1)
            y = n.cbr(y, width, width, 3, stride, group=width // 16)
            y = n.se(y, width, max(1, int(round(cin * 0.25))))
            y = n.bn(n.conv(y, width, width, 1, bias=False), width, gamma=(0.3, 0.6))
            short = x if (stride == 1 and cin == width) else n.bn(n.conv(x, cin, width, 1, stride, bias=False), width)
            x = n.node("Relu", [n.node("Add", [y, short])])
            cin = width
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 13), f


def densenet121(seed):
    """DenseNet-121: BN-ReLU-Conv ordering (BatchNorm after Concat, not after a conv), opset 9."""
    n = Net("densenet121", seed)
    x = n.cbr("input", 3, 64, 7, 2)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for bi, layers in enumerate([6, 12, 24, 16]):
        features = [x]
        for _ in range(layers):
            cat = features[0] if len(features) == 1 else n.node("Concat", features, axis=1)
            y = n.conv(n.node("Relu", [n.bn(cat, c)]), c, 128, 1, bias=False)
            y = n.conv(n.node("Relu", [n.bn(y, 128)]), 128, 32, 3, bias=False, gain=1.0)
            features.append(y)
            c += 32
        x = n.node("Concat", features, axis=1)
        if bi < 3:
            x = n.conv(n.node("Relu", [n.bn(x, c)]), c, c // 2, 1, bias=False)
            x = n.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    x = n.node("Relu", [n.bn(x, c)])
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 9), f


def squeezenet11(seed):
    """SqueezeNet 1.1: Fire modules (Concat of 1x1 and 3x3), MaxPool with ceil_mode=1, opset 10."""
    n = Net("squeezenet1_1", seed)
    x = n.node("Relu", [n.conv("input", 3, 64, 3, 2, pad=0)])

    def pool(x):
        return n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)

    def fire(x, cin, s, e):
        q = n.node("Relu", [n.conv(x, cin, s, 1, pad=0)])
        return n.node("Concat", [n.node("Relu", [n.conv(q, s, e, 1, pad=0)]), n.node("Relu", [n.conv(q, s, e, 3)])], axis=1)

    x = pool(x)
    x = fire(x, 64, 16, 64); x = fire(x, 128, 16, 64); x = pool(x)
    x = fire(x, 128, 32, 128); x = fire(x, 256, 32, 128); x = pool(x)
    x = fire(x, 256, 48, 192); x = fire(x, 384, 48, 192); x = fire(x, 384, 64, 256); x = fire(x, 512, 64, 256)
    x = n.node("Relu", [n.conv(x, 512, 1000, 1, pad=0)])
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 10), f


def googlenet(seed):
    """torchvision GoogLeNet: Inception blocks (four-way Concat), MaxPool ceil_mode, BN eps 1e-3, opset 11."""
    n = Net("googlenet", seed)

    def bc(x, cin, cout, k, stride=1):
        return n.cbr(x, cin, cout, k, stride, eps=1e-3)

    def pool(x, k=3, s=2, p=0):
        return n.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=1)

    def inception(x, cin, c1, c3r, c3, c5r, c5, pp):
        b1 = bc(x, cin, c1, 1)
        b2 = bc(bc(x, cin, c3r, 1), c3r, c3, 3)
        b3 = bc(bc(x, cin, c5r, 1), c5r, c5, 3)
        b4 = bc(pool(x, 3, 1, 1), cin, pp, 1)
        return n.node("Concat", [b1, b2, b3, b4], axis=1), c1 + c3 + c5 + pp

    x = pool(bc("input", 3, 64, 7, 2))
    x = pool(bc(bc(x, 64, 64, 1), 64, 192, 3))
    x, c = inception(x, 192, 64, 96, 128, 16, 32, 32)
    x, c = inception(x, c, 128, 128, 192, 32, 96, 64)
    x = pool(x)
    for cfg in [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)]:
        x, c = inception(x, c, *cfg)
    x = pool(x, 2, 2)
    x, c = inception(x, c, 256, 160, 320, 32, 128, 128)
    x, c = inception(x, c, 384, 192, 384, 48, 128, 128)
    f = n.flatten(n.gap(x))
    return n.model("input", [1, 3, 224, 224], f, 11), f


def convnext_tiny(seed):
    """torchvision ConvNeXt-Tiny: 7x7 depthwise, channels-last LayerNormalization (opset 17), Linear as
    MatMul + Add on 4-D tensors, GELU exported as Div/Erf/Add/Mul/Mul, layer scale, Transposes."""
    n = Net("convnext_tiny", seed)

    def ln_last(x, c, eps=1e-6):
        return n.node("LayerNormalization", [x, n.const(n.rng.uniform(0.8, 1.2, c).astype(np.float32), "ln_w"),
                                             n.const((n.rng.standard_normal(c) * 0.05).astype(np.float32), "ln_b")],
                      axis=-1, epsilon=eps)

    def ln2d(x, c):
        y = n.node("Transpose", [x], perm=[0, 2, 3, 1])
        return n.node("Transpose", [ln_last(y, c)], perm=[0, 3, 1, 2])

    def matmul(x, cin, cout):
        w = (n.rng.standard_normal([cin, cout]) / np.sqrt(cin)).astype(np.float32)
        y = n.node("MatMul", [x, n.const(w, "mm_w")])
        return n.node("Add", [y, n.const((n.rng.standard_normal(cout) * 0.05).astype(np.float32), "mm_b")])

    def gelu(x):
        e = n.node("Erf", [n.node("Div", [x, n.const(np.float32(1.4142135381698608), "sqrt2")])])
        y = n.node("Mul", [x, n.node("Add", [e, n.const(np.float32(1.0), "one")])])
        return n.node("Mul", [y, n.const(np.float32(0.5), "half")])

    dims, depths = [96, 192, 384, 768], [3, 3, 9, 3]
    x = ln2d(n.conv("input", 3, 96, 4, 4, pad=0), 96)
    for stage, (c, depth) in enumerate(zip(dims, depths)):
        if stage > 0:
            x = n.conv(ln2d(x, dims[stage - 1]), dims[stage - 1], c, 2, 2, pad=0)
        for _ in range(depth):
            y = n.conv(x, c, c, 7, group=c, gain=1.0)
            y = n.node("Transpose", [y], perm=[0, 2, 3, 1])
            y = matmul(gelu(matmul(ln_last(y, c), c, 4 * c)), 4 * c, c)
            y = n.node("Mul", [y, n.const(n.rng.uniform(0.1, 0.3, c).astype(np.float32), "gamma")])
            x = n.node("Add", [x, n.node("Transpose", [y], perm=[0, 3, 1, 2])])
    f = n.flatten(ln2d(n.gap(x), 768))
    return n.model("input", [1, 3, 224, 224], f, 17), f


def tf_style(seed):
    """A tf2onnx-style MobileNet: NHWC input and Transpose, BatchNorm as per-channel Mul and Add after
    bias-free convolutions, explicit Pad before stride-2 convs (TF 'SAME'), Relu6, ReduceMean over H,W."""
    n = Net("tf_style_mobilenet", seed)
    x = n.node("Transpose", ["input"], perm=[0, 3, 1, 2])

    def conv_bn(x, cin, cout, k, stride=1, group=1, act=True, gamma=(0.7, 1.2)):
        if stride == 2:
            x = n.node("Pad", [x, n.const(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")], mode="constant")
            y = n.conv(x, cin, cout, k, 2, pad=0, group=group, bias=False)
        else:
            y = n.conv(x, cin, cout, k, 1, group=group, bias=False)
        scale, beta, mean, var = n.bn_params(cout, gamma)
        factor = scale / np.sqrt(var + 1e-3)
        y = n.node("Mul", [y, n.const(factor.reshape(cout, 1, 1).astype(np.float32), "bn_mul")])
        y = n.node("Add", [y, n.const((beta - mean * factor).reshape(1, cout, 1, 1).astype(np.float32), "bn_add")])
        return n.act(y, "Relu6") if act else y

    x = conv_bn(x, 3, 32, 3, 2)
    cin = 32
    for t, c, reps, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1), (6, 160, 2, 2)]:
        for i in range(reps):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = conv_bn(x, cin, hidden, 1) if t != 1 else x
            y = conv_bn(y, hidden, hidden, 3, stride, group=hidden)
            y = conv_bn(y, hidden, c, 1, act=False, gamma=(0.3, 0.6))
            x = n.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = conv_bn(x, cin, 1024, 1)
    x = n.node("Transpose", [x], perm=[0, 2, 3, 1])
    f = n.node("ReduceMean", [x], axes=[1, 2], keepdims=0)
    return n.model("input", [1, 224, 224, 3], f, 13, dynamic_batch="unk__0"), f


def pytorch_dynamic_flatten(seed):
    """ResNet-18 exported with a dynamic batch axis and `x.view(x.size(0), -1)`:
    Shape → Gather → Unsqueeze → Concat → Reshape, with Constant nodes, opset 11."""
    n = Net("resnet18_dynamic_flatten", seed)
    x = n.cbr("input", 3, 64, 7, 2)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, width in enumerate([64, 128, 256, 512]):
        for b in range(2):
            stride = 2 if b == 0 and stage > 0 else 1
            y = n.cbr(x, cin, width, 3, stride)
            y = n.bn(n.conv(y, width, width, 3, bias=False), width, gamma=(0.3, 0.6))
            short = x if stride == 1 and cin == width else n.bn(n.conv(x, cin, width, 1, stride, bias=False), width)
            x = n.node("Relu", [n.node("Add", [y, short])])
            cin = width
    pooled = n.gap(x)
    shape = n.node("Shape", [pooled])
    zero = n.fresh("const")
    n.nodes.append(helper.make_node("Constant", [], [zero], name=zero, value=numpy_helper.from_array(np.array(0, np.int64))))
    batch = n.node("Unsqueeze", [n.node("Gather", [shape, zero], axis=0)], axes=[0])
    minus1 = n.fresh("const")
    n.nodes.append(helper.make_node("Constant", [], [minus1], name=minus1, value=numpy_helper.from_array(np.array([-1], np.int64))))
    target = n.node("Concat", [batch, minus1], axis=0)
    f = n.node("Reshape", [pooled, target])
    return n.model("input", [1, 3, 224, 224], f, 11, dynamic_batch="batch_size", extra_outputs=[n.linear(f, 512, 1000)]), f


ZOO = {
    "resnet50": (resnet50, "NCHW"),
    "mobilenet-v2": (mobilenet_v2, "NCHW"),
    "mobilenet-v3-large": (mobilenet_v3_large, "NCHW"),
    "efficientnet-b0": (efficientnet_b0, "NCHW"),
    "regnety-800mf": (regnety_800mf, "NCHW"),
    "densenet121": (densenet121, "NCHW"),
    "squeezenet1.1": (squeezenet11, "NCHW"),
    "googlenet": (googlenet, "NCHW"),
    "convnext-tiny": (convnext_tiny, "NCHW"),
    "tf-style-mobilenet": (tf_style, "NHWC"),
    "pytorch-dynamic-flatten": (pytorch_dynamic_flatten, "NCHW"),
}


def shape_of(model: onnx.ModelProto) -> list[int]:
    return [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]


def golden(model: onnx.ModelProto, feature: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    (out,) = session.run([feature], {"input": x})
    return np.ascontiguousarray(out.reshape(x.shape[0], -1), dtype=np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="zoo directory (one folder per model)")
    ap.add_argument("--goldens", action="store_true", help="also write onnxruntime features beside each model")
    ap.add_argument("--only", nargs="*", help="build only these models")
    args = ap.parse_args(argv)
    names = args.only or list(ZOO)
    for index, name in enumerate(names):
        build, layout = ZOO[name]
        model, feature = build(SEED + index)
        d = args.out / name
        tmp = args.out / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        onnx.save(model, tmp / "model.onnx")
        if args.goldens:
            x = np.random.default_rng(SEED).standard_normal([1, *shape_of(model)]).astype(np.float32)
            np.save(tmp / "input.npy", x)
            np.save(tmp / "features.npy", golden(model, feature, x))
        config = {"name": name, "onnx": "model.onnx", "input": {"name": "input", "layout": layout},
                  "preprocess": {"resizeShorterSide": 256, "crop": 224, "filter": "bilinear", "colorOrder": "RGB",
                                 "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
                  "featureNode": feature}
        (tmp / "model.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.rmtree(d, ignore_errors=True)
        os.rename(tmp, d)
        print(f"zoo: {name} -> {d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
