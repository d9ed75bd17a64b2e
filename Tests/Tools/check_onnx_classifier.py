#!/usr/bin/env python3
"""Checks an ONNX classifier exported by HeadExport against probabilities computed in Swift.

  check_onnx_classifier.py MODEL.onnx INPUT.npy EXPECTED_PROBS.npy [--expected-logits LOGITS.npy] [--atol 1e-4]
      Validates the model with onnx.checker, runs it in onnxruntime on INPUT.npy and compares the
      `probabilities` output (and `logits`, if given) with the expected arrays. Exit 0 on a match.

  check_onnx_classifier.py --features BACKBONE.onnx FEATURE_NODE INPUT.npy OUT.npy
      Runs the backbone with FEATURE_NODE exposed as an output and saves that tensor (float32), so
      the Swift test can compute the head's expected output from the very features the model sees.

One JSON line on stdout says what was compared; problems go to stderr.
"""
import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def session(model_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def extract_features(backbone, feature_node, input_path, out_path):
    model = onnx.load(backbone)
    if feature_node not in [o.name for o in model.graph.output]:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(feature_node))
    sess = session(model.SerializeToString())
    inputs = np.load(input_path)
    (features,) = sess.run([feature_node], {sess.get_inputs()[0].name: inputs})
    np.save(out_path, features.astype(np.float32))
    print(json.dumps({"features": list(features.shape)}))
    return 0


def check(model_path, input_path, expected_path, logits_path, atol):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    metadata = {p.key: p.value for p in model.metadata_props}
    sess = session(model.SerializeToString())
    outputs = [o.name for o in sess.get_outputs()]
    if "probabilities" not in outputs:
        print(f"no 'probabilities' output, outputs are {outputs}", file=sys.stderr)
        return 1
    inputs = np.load(input_path)
    results = dict(zip(outputs, sess.run(outputs, {sess.get_inputs()[0].name: inputs})))
    probabilities = results["probabilities"]
    expected = np.load(expected_path)
    failures = []
    if probabilities.shape != expected.shape:
        failures.append(f"probabilities shape {probabilities.shape} != expected {expected.shape}")
    else:
        difference = float(np.max(np.abs(probabilities - expected)))
        if not difference <= atol:
            failures.append(f"probabilities differ by up to {difference} (atol {atol})")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5):
        failures.append("probability rows do not sum to 1")
    logit_difference = None
    if logits_path:
        expected_logits = np.load(logits_path)
        logits = results.get("logits")
        if logits is None or logits.shape != expected_logits.shape:
            failures.append(f"logits missing or shaped {None if logits is None else logits.shape}")
        else:
            logit_difference = float(np.max(np.abs(logits - expected_logits)))
            if not np.allclose(logits, expected_logits, rtol=1e-3, atol=10 * atol):
                failures.append(f"logits differ by up to {logit_difference}")
    class_names = json.loads(metadata.get("classNames", "null"))
    if not isinstance(class_names, list) or len(class_names) != probabilities.shape[1]:
        failures.append(f"metadata classNames {class_names!r} does not name {probabilities.shape[1]} classes")
    opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    summary = {
        "ir_version": model.ir_version, "opset": opset, "outputs": outputs,
        "probabilities": list(probabilities.shape),
        "max_abs_diff": float(np.max(np.abs(probabilities - expected))) if probabilities.shape == expected.shape else None,
        "max_abs_logit_diff": logit_difference, "nodes": len(model.graph.node), "metadata": sorted(metadata),
    }
    print(json.dumps(summary))
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--features":
        if len(sys.argv) != 6:
            print(__doc__, file=sys.stderr)
            return 2
        return extract_features(*sys.argv[2:6])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("expected")
    parser.add_argument("--expected-logits")
    parser.add_argument("--atol", type=float, default=1e-4)
    arguments = parser.parse_args()
    return check(arguments.model, arguments.input, arguments.expected, arguments.expected_logits, arguments.atol)


if __name__ == "__main__":
    sys.exit(main())
