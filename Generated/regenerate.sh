#!/usr/bin/env bash
# Regenerates the committed Swift code under Generated/Sources from:
#   - the OTLP schema, as FileDescriptorProtos from PyPI opentelemetry-proto (pinned below), and
#   - our own protos under Generated/protos (the acceptor-to-writer link).
# Needs: protoc (Debian protobuf-compiler, 3.21), python3, and the two Swift plugins built from
# swift-protobuf 1.39.0 (protoc-gen-swift) and grpc-swift-protobuf 2.4.1 (protoc-gen-grpc-swift-2).
# CI never runs this: the output is committed. Output is byte-identical between runs.
#
#   PLUGINS=/path/to/tools/.build/release Generated/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")"
OTLP_PROTO_VERSION=1.45.2   # opentelemetry-proto on PyPI, generated from OTLP proto v1.10.0
: "${PLUGINS:?set PLUGINS to the folder holding protoc-gen-swift and protoc-gen-grpc-swift-2}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "opentelemetry-proto==$OTLP_PROTO_VERSION"
"$work/venv/bin/python" make_descriptors.py "$work/otlp.fds" >/dev/null

otlp_data="opentelemetry/proto/common/v1/common.proto opentelemetry/proto/resource/v1/resource.proto
  opentelemetry/proto/trace/v1/trace.proto opentelemetry/proto/metrics/v1/metrics.proto
  opentelemetry/proto/logs/v1/logs.proto"
otlp_services="opentelemetry/proto/collector/trace/v1/trace_service.proto
  opentelemetry/proto/collector/metrics/v1/metrics_service.proto
  opentelemetry/proto/collector/logs/v1/logs_service.proto"

rm -rf Sources/OTLPProto Sources/SignalDBProto
mkdir -p Sources/OTLPProto Sources/SignalDBProto
protoc --descriptor_set_in="$work/otlp.fds" --plugin=protoc-gen-swift="$PLUGINS/protoc-gen-swift" \
  --swift_out=Sources/OTLPProto --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  $otlp_data $otlp_services
protoc --descriptor_set_in="$work/otlp.fds" --plugin=protoc-gen-grpc-swift="$PLUGINS/protoc-gen-grpc-swift-2" \
  --grpc-swift_out=Sources/OTLPProto --grpc-swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  $otlp_services
protoc -I protos --plugin=protoc-gen-swift="$PLUGINS/protoc-gen-swift" \
  --swift_out=Sources/SignalDBProto --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  signaldb/internal/v1/forward.proto
protoc -I protos --plugin=protoc-gen-grpc-swift="$PLUGINS/protoc-gen-grpc-swift-2" \
  --grpc-swift_out=Sources/SignalDBProto --grpc-swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  signaldb/internal/v1/forward.proto
echo "regenerated: $(ls Sources/OTLPProto Sources/SignalDBProto | grep -c swift) files"
