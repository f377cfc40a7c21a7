# SignalWAL: `make run` for the demo, `make test` for the tests. Both install what is missing.
SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: crash-test run test sanitize bench deps build clean

# Installs liburing-dev (io_uring headers and library) when it is missing: with apt-get when
# running as root, otherwise by printing the exact command to run.
deps:
	@if [ ! -f /usr/include/liburing.h ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing liburing-dev"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburing-dev; \
	  else \
	    echo "SignalWAL needs liburing-dev: run  sudo apt-get install -y liburing-dev  then try again"; exit 1; \
	  fi; \
	fi
	@command -v swift >/dev/null || { echo "SignalWAL needs Swift 6.1 or newer on PATH (https://swift.org/install)"; exit 1; }

build: deps
	swift build

# The demo: appends from 8 threads into .wal/demo, kills the writer with SIGKILL, recovers,
# and checks every acknowledged record.
run: deps
	swift build --product signalwal-demo
	.build/debug/signalwal-demo

# All tests, then the concurrency tests again under ThreadSanitizer (its own build folder).
test: deps
	swift build --build-tests
	swift test
	swift test --sanitize=thread --scratch-path .build-tsan --filter "AppendReadTests|CheckpointTests|DurabilityInvariantTests|ErrorTests|BatchLimitTests"

# The suite under ThreadSanitizer (concurrency tests) and AddressSanitizer (everything).
# Separate build folders, so they do not invalidate the normal build.
sanitize: deps
	swift test --sanitize=thread --scratch-path .build-tsan --filter "AppendReadTests|CheckpointTests|DurabilityInvariantTests|ErrorTests|RecoveryTests"
	swift test --sanitize=address --scratch-path .build-asan

# The side-by-side comparison (fio, RocksDB db_bench, SignalWAL): prints a Markdown table and
# writes docs/bench/bench-results.json and docs/bench/bench-results.svg. Installs fio and
# rocksdb-tools when missing (as root). BENCH_SECONDS=n sets the time per measurement.
BENCH_SECONDS ?= 5
# kill -9 loop: COUNT cycles of append-then-SIGKILL-then-verify, alternating the two write
# backends (issue 4's crash harness; `make test` runs 20).
COUNT ?= 100
crash-test: deps
	SIGNALWAL_CRASH_ITERATIONS=$(COUNT) swift test --filter ProcessTests/testKilledWriterLosesNothingAcknowledged

bench: deps
	swift build -c release --product signalwal-bench
	mkdir -p docs/bench
	.build/release/signalwal-bench compare --seconds $(BENCH_SECONDS) --output docs/bench | tee docs/bench/bench-results.md

clean:
	rm -rf .build .build-tsan .build-asan .wal
