# SignalWAL and SignalDB's two ingestion services: `make run` starts the pipeline, `make test`
# runs the tests. Both install what is missing.
SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: bench-services crash-test power-cut-test soak soak-services soak-services-sanitized fuzz fuzz-merge fuzz-ingest run demo engine-demo run-acceptor test test-plain test-services test-deploy service-venvs sanitize bench deps build clean

# Installs the C libraries the build links when one is missing: liburing-dev (io_uring, the
# engine), zlib1g-dev (the acceptor's gzip bodies) and libsqlite3-dev (the writer's store); with
# apt-get when running as root, otherwise by printing the exact command to run.
deps:
	@missing=""; \
	  [ -f /usr/include/liburing.h ] || missing="$$missing liburing-dev"; \
	  [ -f /usr/include/zlib.h ] || missing="$$missing zlib1g-dev"; \
	  [ -f /usr/include/sqlite3.h ] || missing="$$missing libsqlite3-dev"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	      echo "installing$$missing"; \
	      DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	      echo "the build needs$$missing: run  sudo apt-get install -y$$missing  then try again"; exit 1; \
	    fi; \
	  fi
	@command -v swift >/dev/null || { echo "SignalWAL needs Swift 6.2 or newer on PATH (https://swift.org/install)"; exit 1; }

build: deps
	swift build

# The engine's crash demo: appends from 8 threads into .wal/demo, kills the writer with SIGKILL,
# recovers, and checks every acknowledged record.
engine-demo: deps
	swift build --product signalwal-demo
	.build/debug/signalwal-demo

# The pipeline on its embedded defaults: builds both services, starts the writer and the
# acceptor, prints their endpoints and an example, and runs until Ctrl-C (which drains and stops
# both).
run: deps
	swift build --product signaldb-writer
	swift build --product signaldb-acceptor
	scripts/run-pipeline.sh

# The pipeline with real OpenTelemetry clients (HTTP and gRPC) in a scratch directory on free
# ports: kills both services with SIGKILL mid-stream, restarts them, and checks that every
# acknowledged span is in the store exactly once.
demo: deps service-venvs
	swift build --product signaldb-writer
	swift build --product signaldb-acceptor
	$(VENV)/bin/python scripts/demo.py

# Everything CI runs: the whole Swift suite (engine and services, including both fuzz corpora
# replayed through the fuzz targets' bodies), the services with real OpenTelemetry clients
# (Tests/services), and the engine's suite again under AddressSanitizer and under
# ThreadSanitizer (SIGNALWAL_REDUCED=1: the loops and exhaustive cases sample fewer cases).
# The libFuzzer runs themselves (`make fuzz`, `make fuzz-ingest`) are outside it: with the
# services' network stack to build, their builds and corpus replays would take make test past
# its 40-minute budget on a fresh clone.
test: test-plain test-services test-deploy sanitize

# `swift build --build-tests` would also build every dependency's plugin tools, among them
# swift-protobuf's C++ protoc (about ten minutes here); building the test bundle and the
# executables the tests start by name does not.
test-plain: deps
	swift build --product SignalWALPackageTests
	for p in signalwal signalwal-demo signalwal-bench signaldb-acceptor signaldb-writer; do swift build --product $$p || exit 1; done
	swift test --skip-build

# The service tests drive the real binaries with the OpenTelemetry Python SDK's exporters:
# one venv for the protobuf exporters (HTTP and gRPC), one for the OTLP/JSON exporter (its
# pins conflict with the first). protoc turns the link's proto into a descriptor for the
# tests' fake writer. SERVICE_TESTS picks tests (unittest names), default all.
VENV := .venv-services
JSON_VENV := .venv-json
OTEL_VERSION := 1.45.2
# test_operations starts Debian's prometheus (2.42) against both services; test_docs runs the
# commands of docs/operations/wal-persistence.md against a live pipeline; test_soak and
# test_badinput run the pipeline's faults and the HTTP fuzzer at their reduced sizes (the long
# runs are `make soak-services`).
SERVICE_TESTS ?= test_acceptor test_pipeline test_operations test_docs test_soak test_badinput
service-venvs:
	@command -v protoc >/dev/null || { if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler; else echo "the service tests need protoc: sudo apt-get install -y protobuf-compiler"; exit 1; fi; }
	@command -v prometheus >/dev/null || { if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; else echo "the service tests need prometheus and promtool: sudo apt-get install -y prometheus"; exit 1; fi; }
	@[ -x $(VENV)/bin/python ] || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q opentelemetry-sdk==$(OTEL_VERSION) opentelemetry-exporter-otlp-proto-http==$(OTEL_VERSION) opentelemetry-exporter-otlp-proto-grpc==$(OTEL_VERSION); }
	@[ -x $(JSON_VENV)/bin/python ] || { python3 -m venv $(JSON_VENV) && $(JSON_VENV)/bin/pip install -q opentelemetry-sdk==$(OTEL_VERSION) opentelemetry-exporter-otlp-json-http; }

test-services: deps service-venvs
	swift build --product signaldb-acceptor
	swift build --product signaldb-writer
	swift build --product signalwal
	cd Tests/services && SIGNALDB_JSON_PYTHON=$(CURDIR)/$(JSON_VENV)/bin/python ../../$(VENV)/bin/python -m unittest -v $(SERVICE_TESTS)

# The pipeline's long runs behind docs/RELIABILITY.md, section 9: 200 kill -9 cycles, 50 power
# cuts, a 3-minute writer outage, 5 full-disk rounds under each WAL, 20 SIGTERMs, and
# SOAK_FUZZ_SECONDS of the HTTP fuzzer (test_soak.py and test_badinput.py say how to set each
# count). Needs root for the mounts. SOAK_BUILD=release runs them against a release build.
SOAK_FUZZ_SECONDS ?= 300
SOAK_BUILD ?= debug
soak-services: deps service-venvs
	swift build -c $(SOAK_BUILD) --product signaldb-acceptor
	swift build -c $(SOAK_BUILD) --product signaldb-writer
	swift build -c $(SOAK_BUILD) --product signalwal
	cd Tests/services && SIGNALDB_SOAK=1 SIGNALDB_SOAK_SECONDS=$(SOAK_FUZZ_SECONDS) SIGNALDB_BUILD=$(CURDIR)/.build/$(SOAK_BUILD) \
	  ../../$(VENV)/bin/python -m unittest -v test_soak test_badinput

# The same scenarios at their reduced sizes against the services built with a sanitizer
# (SANITIZER=thread or address), in their own build folder. Outside `make test`: each
# sanitizer build of Hummingbird, gRPC and BoringSSL costs more of the CI budget than is left.
# A sanitizer report makes the test fail (halt_on_error; test_soak also reads the logs).
# AddressSanitizer's quarantine (256 MiB by default) and redzones raise the fuzzer's memory
# bound from 512 to 1024 MiB: the first ASan run peaked at 549 MiB (344 MiB without ASan).
SANITIZER ?= thread
soak-services-sanitized: deps service-venvs
	for p in signaldb-acceptor signaldb-writer signalwal; do swift build --sanitize=$(SANITIZER) --scratch-path .build-$(SANITIZER)-services --product $$p || exit 1; done
	cd Tests/services && SIGNALWAL_REDUCED=1 SIGNALDB_BUILD=$(CURDIR)/.build-$(SANITIZER)-services/debug \
	  SIGNALDB_BADINPUT_RSS_MIB=$(if $(filter address,$(SANITIZER)),1024,512) \
	  TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/Tests/services/tsan-services.supp ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 ../../$(VENV)/bin/python -m unittest -v test_soak test_badinput

# The deployment files (deploy/: Dockerfile, compose, Kubernetes, Prometheus config and
# alerts), validated since no Docker engine or cluster runs here: yamllint, the compose spec's
# schema, the Kubernetes schemas (strict), promtool check config/rules and the alerts' unit
# tests (promtool test rules), and the container settings the services rely on.
test-deploy:
	scripts/check-deploy.sh

# The acceptor alone on its defaults (OTLP on 127.0.0.1:4318 and :4317, admin on :9464,
# WAL in .wal/acceptor, forwarding to a writer on 127.0.0.1:50061).
run-acceptor: deps
	swift build --product signaldb-acceptor
	.build/debug/signaldb-acceptor

# Separate build folders, so they do not invalidate the normal build. The child processes the
# tests start are the sanitized builds too. LeakSanitizer is off: at exit XCTest still holds
# every teardown closure and Foundation.Process its bookkeeping, and it reports those (none of
# its reports came from Sources/; descriptor and mapping leaks are LeakTests' job).
# SIGNALWAL_ENGINE_ONLY=1 leaves the services out of these builds (see Package.swift): each
# sanitizer build of Hummingbird and gRPC would cost minutes of the CI budget.
# ThreadSanitizer looks for races between threads: the suites below run on one thread (recovery,
# the exhaustive corruption cases, the corpus replay, descriptor leaks) or across processes (the
# command-line tool), so under TSan they would only cost time (about 5 of its 9 minutes here).
# AddressSanitizer runs them all.
TSAN_SKIP = RecoveryTests|CommandLineToolTests|FuzzCorpusTests|LeakTests
sanitize: deps
	SIGNALWAL_ENGINE_ONLY=1 swift build --build-tests --sanitize=address --scratch-path .build-asan
	SIGNALWAL_ENGINE_ONLY=1 ASAN_OPTIONS=detect_leaks=0 SIGNALWAL_REDUCED=1 swift test --skip-build --sanitize=address --scratch-path .build-asan
	SIGNALWAL_ENGINE_ONLY=1 swift build --build-tests --sanitize=thread --scratch-path .build-tsan
	SIGNALWAL_ENGINE_ONLY=1 SIGNALWAL_REDUCED=1 swift test --skip-build --sanitize=thread --scratch-path .build-tsan --skip '$(TSAN_SKIP)'

# libFuzzer over recovery (Fuzz/): FUZZ_SECONDS of fuzzing starting from Fuzz/corpus. New
# inputs go to .build-fuzz/corpus; `make fuzz-merge` folds the useful ones into Fuzz/corpus.
# A crash leaves its input in .build-fuzz/artifacts/ and fails the target.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -max_len=65536 -timeout=10 -rss_limit_mb=4096
# The sanitizer flags go to swiftc directly as well: with CI=true in the environment, SwiftPM's
# --sanitize instrumented only the Fuzz package's own target, not SignalWAL (219 coverage
# counters instead of ~25,000), so the fuzzer ran blind. The check below fails the build if
# that ever happens again.
fuzz: deps
	cd Fuzz && swift build -c debug --product signalwal-fuzz --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --scratch-path ../.build-fuzz
	@counters=$$(.build-fuzz/debug/signalwal-fuzz -runs=0 Fuzz/corpus/seed-0 2>&1 | sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline.*/\1/p'); \
	  if [ "$${counters:-0}" -lt 5000 ]; then echo "signalwal-fuzz has only $${counters:-0} coverage counters: SignalWAL was not instrumented"; exit 1; fi; \
	  echo "signalwal-fuzz: $$counters coverage counters"
	mkdir -p .build-fuzz/corpus .build-fuzz/artifacts
	.build-fuzz/debug/signalwal-fuzz .build-fuzz/corpus Fuzz/corpus $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=.build-fuzz/artifacts/ -print_final_stats=1

fuzz-merge:
	.build-fuzz/debug/signalwal-fuzz -merge=1 Fuzz/corpus .build-fuzz/corpus $(FUZZ_FLAGS)

# libFuzzer over request decoding, bounded inflate and the envelope (IngestFuzzInput), from
# Fuzz/ingest-corpus, for INGEST_FUZZ_SECONDS. Same instrumentation check as `fuzz`.
INGEST_FUZZ_SECONDS ?= 30
fuzz-ingest: deps
	cd Fuzz && swift build -c debug --product signaldb-ingest-fuzz --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --scratch-path ../.build-fuzz
	@counters=$$(.build-fuzz/debug/signaldb-ingest-fuzz -runs=0 Fuzz/ingest-corpus/seed-000 2>&1 | sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline.*/\1/p'); \
	  if [ "$${counters:-0}" -lt 5000 ]; then echo "signaldb-ingest-fuzz has only $${counters:-0} coverage counters: SignalDBIngest was not instrumented"; exit 1; fi; \
	  echo "signaldb-ingest-fuzz: $$counters coverage counters"
	mkdir -p .build-fuzz/ingest-corpus .build-fuzz/ingest-artifacts
	.build-fuzz/debug/signaldb-ingest-fuzz .build-fuzz/ingest-corpus Fuzz/ingest-corpus -max_len=65536 -timeout=10 -rss_limit_mb=2048 -max_total_time=$(INGEST_FUZZ_SECONDS) -artifact_prefix=.build-fuzz/ingest-artifacts/ -print_final_stats=1

# The side-by-side comparison (fio, RocksDB db_bench, SignalWAL): prints a Markdown table and
# writes docs/bench/bench-results.json and docs/bench/bench-results.svg. Installs fio and
# rocksdb-tools when missing (as root). BENCH_SECONDS=n sets the time per measurement.
BENCH_SECONDS ?= 5
# kill -9 loop: COUNT cycles of append-then-SIGKILL-then-verify over every policy and backend
# (`make test` runs 100).
COUNT ?= 100
crash-test: deps
	SIGNALWAL_CRASH_ITERATIONS=$(COUNT) swift test --filter ProcessTests/testKilledWriterLosesNothingAcknowledged

# Simulated power cuts on a loop-mounted ext4 image (root; `make test` runs 60).
power-cut-test: deps
	SIGNALWAL_CUT_ITERATIONS=$(COUNT) swift test --filter PowerCutTests

# The long runs behind docs/RELIABILITY.md: `make soak COUNT=n` runs n kills and n power cuts;
# without COUNT, 1000 kills and 200 cuts.
SOAK_KILLS = $(if $(filter command line,$(origin COUNT)),$(COUNT),1000)
SOAK_CUTS = $(if $(filter command line,$(origin COUNT)),$(COUNT),200)
soak: deps
	SIGNALWAL_CRASH_ITERATIONS=$(SOAK_KILLS) swift test --filter ProcessTests/testKilledWriterLosesNothingAcknowledged
	SIGNALWAL_CUT_ITERATIONS=$(SOAK_CUTS) swift test --filter PowerCutTests

bench: deps
	@if ! command -v fio >/dev/null || ! command -v db_bench >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio rocksdb-tools; \
	  else echo "the comparison needs fio and db_bench: sudo apt-get install -y fio rocksdb-tools"; fi; \
	fi
	swift build -c release --product signalwal-bench
	mkdir -p docs/bench
	.build/release/signalwal-bench compare --seconds $(BENCH_SECONDS) --output docs/bench | tee docs/bench/bench-results.md

# The two services under load (issue 15; BENCHMARKS.md's "Services" section): wrk and h2load
# against release builds of the acceptor, the writer and signaldb-bench-baseline (the acceptor's
# receivers with the WAL append replaced by a discarding sink: the no-WAL ceiling), on free
# ports in .run/bench-services. Writes docs/bench/services-results.{json,md,svg} and puts the
# Markdown at the top of BENCHMARKS.md's sections. About 20 minutes; BENCH_SECONDS per point,
# BENCH_HOLD_SECONDS for the end-to-end hold, BENCH_SECTIONS (S1,S3,S2,S4,S1b) to run fewer;
# the other knobs are in the script's docstring.
BENCH_PYTHON ?= $(CURDIR)/$(VENV)/bin/python
# 10 s per point unless BENCH_SECONDS is given (make bench's default, 5, is for the engine).
SERVICE_BENCH_SECONDS = $(if $(filter command line environment,$(origin BENCH_SECONDS)),$(BENCH_SECONDS),10)
bench-services: deps
	@if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client; \
	  else echo "the service benchmark needs wrk and h2load: sudo apt-get install -y wrk nghttp2-client"; exit 1; fi; \
	fi
	@[ -x "$(BENCH_PYTHON)" ] || $(MAKE) service-venvs
	for p in signaldb-acceptor signaldb-writer signaldb-bench-baseline; do swift build -c release --product $$p || exit 1; done
	BENCH_SECONDS=$(SERVICE_BENCH_SECONDS) BENCH_PYTHON=$(BENCH_PYTHON) python3 scripts/bench_services.py

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz .wal
