#!/usr/bin/env python3
"""Writes the OTLP schema as a FileDescriptorSet, taken from the PyPI package opentelemetry-proto.

The package ships no .proto files, only generated *_pb2 modules; each module's DESCRIPTOR carries
the serialized FileDescriptorProto it was generated from. We walk the three collector services and
their imports (dependencies first) and write them all into one set that protoc reads with
--descriptor_set_in. Usage: make_descriptors.py OUT.fds
"""
import sys

from google.protobuf import descriptor_pb2
import opentelemetry.proto.collector.trace.v1.trace_service_pb2 as trace_service
import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 as metrics_service
import opentelemetry.proto.collector.logs.v1.logs_service_pb2 as logs_service


def main(out_path):
    seen = set()
    files = descriptor_pb2.FileDescriptorSet()

    def add(fd):
        if fd.name in seen:
            return
        for dependency in fd.dependencies:
            add(dependency)
        seen.add(fd.name)
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(fd.serialized_pb)
        files.file.append(proto)

    for module in (trace_service, metrics_service, logs_service):
        add(module.DESCRIPTOR)
    with open(out_path, "wb") as out:
        out.write(files.SerializeToString())
    for f in files.file:
        print(f.name)


if __name__ == "__main__":
    main(sys.argv[1])
