#!/usr/bin/env python3
"""Runs an exported classifier.onnx in onnxruntime on INPUT.npy and prints each row's top-1 class as JSON.

Usage: onnx_top1.py MODEL.onnx INPUT.npy
"""
import json
import sys

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2]).astype(np.float32)
outputs = session.run(["probabilities"], {session.get_inputs()[0].name: x})[0]
print(json.dumps([int(i) for i in outputs.argmax(axis=1)]))
