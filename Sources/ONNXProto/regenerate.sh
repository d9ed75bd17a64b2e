#!/usr/bin/env bash
# Regenerates onnx.pb.swift from Debian's libonnx-dev copy of onnx.proto.
# protoc-gen-swift must match the swift-protobuf version in Package.swift (1.39.0):
#   git clone /opt/swift-packages/apple/swift-protobuf.git /tmp/swift-protobuf   # or the github URL
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
#   PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift Sources/ONNXProto/regenerate.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift)}
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=DropPath \
  --proto_path=/usr/include/onnx --swift_out="$here" onnx.proto
