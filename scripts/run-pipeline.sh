#!/usr/bin/env bash
# The pipeline on its embedded defaults (`make run` calls this after building both services):
# starts signaldb-writer, waits for its /readyz, starts signaldb-acceptor, waits for its
# /readyz, prints their endpoints and an example, and runs until Ctrl-C or SIGTERM. Then it
# stops the acceptor first (so it forwards what it can while the writer is still up), then the
# writer (which stores what it holds), and prints both exit codes.
#
# Settings are the services' own environment variables (see `signaldb-writer --help` and
# `signaldb-acceptor --help`); whatever you export is passed through, and the addresses and
# store printed below follow it. Paths are relative to the current directory, like the
# services' defaults: logs go to .run/writer.log and .run/acceptor.log.
#
# SIGNALDB_BIN: folder holding the two binaries [the repository's .build/debug].
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${SIGNALDB_BIN:-$here/../.build/debug}"
writer_bin="$bin/signaldb-writer"
acceptor_bin="$bin/signaldb-acceptor"
for b in "$writer_bin" "$acceptor_bin"; do
  [ -x "$b" ] || { echo "run-pipeline: $b is missing (build it: swift build --product $(basename "$b"), or set SIGNALDB_BIN)" >&2; exit 1; }
done

# The addresses as the services will read them (their defaults, unless exported).
writer_grpc="${WRITER_GRPC_ADDR:-127.0.0.1:50061}"
writer_admin="${WRITER_ADMIN_ADDR:-127.0.0.1:9465}"
writer_store="${WRITER_STORE:-sqlite:.data/signaldb.sqlite}"
acceptor_http="${ACCEPTOR_HTTP_ADDR:-127.0.0.1:4318}"
acceptor_grpc="${ACCEPTOR_GRPC_ADDR:-127.0.0.1:4317}"
acceptor_admin="${ACCEPTOR_ADMIN_ADDR:-127.0.0.1:9464}"
store_path="${writer_store#sqlite:}"
if [ -n "${WRITER_CONFIG_FILE:-}" ] || [ -n "${ACCEPTOR_CONFIG_FILE:-}" ]; then
  echo "note: a config file is set; the addresses printed here come from the environment and the defaults only" >&2
fi

# host:port as something a client on this machine can reach (a wildcard bind means loopback).
reachable() {
  local addr="$1" host port
  port="${addr##*:}"
  host="${addr%:*}"
  case "$host" in
    ""|0.0.0.0|"[::]"|"::") host=127.0.0.1 ;;
  esac
  echo "$host:$port"
}

run_dir=.run
mkdir -p "$run_dir"
writer_log="$run_dir/writer.log"
acceptor_log="$run_dir/acceptor.log"

writer_pid=""
acceptor_pid=""
writer_rc=""
acceptor_rc=""

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

log_tail() {  # name log
  if grep -qE 'Fatal error|Program crashed' "$2" 2>/dev/null; then
    echo "---- crash in $2 ----" >&2
    grep -E 'Fatal error|Program crashed|crashed:' "$2" >&2 || true
    grep -m1 -A6 ' crashed:$' "$2" >&2 || true
  fi
  echo "---- last 30 lines of $2 ----" >&2
  tail -n 30 "$2" >&2 || true
  echo "----" >&2
}

# SIGTERM to pid, wait up to 60 s, SIGKILL past that; sets the named variable to the exit code.
stop_one() {  # name pid result-variable
  local name="$1" pid="$2" var="$3" rc=0 i
  if [ -z "$pid" ]; then return; fi
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      echo "$name did not stop within 60 s of SIGTERM; sending SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true  # its session's group (setsid)
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  printf -v "$var" '%s' "$rc"
}

# Acceptor first, then the writer.
stop_all() {
  trap '' INT TERM HUP
  if alive "$acceptor_pid" || alive "$writer_pid"; then echo "stopping (acceptor first, then writer)..."; fi
  stop_one signaldb-acceptor "$acceptor_pid" acceptor_rc
  stop_one signaldb-writer "$writer_pid" writer_rc
}

report_and_exit() {  # exit code
  local code="$1"
  echo "stopped: signaldb-acceptor exit ${acceptor_rc:-not started}, signaldb-writer exit ${writer_rc:-not started}  (logs $writer_log, $acceptor_log)"
  if [ "$code" = 0 ]; then
    { [ "${acceptor_rc:-0}" = 0 ] && [ "${writer_rc:-0}" = 0 ]; } || code=1
  fi
  exit "$code"
}

on_signal() {
  echo
  stop_all
  report_and_exit 0
}
trap on_signal INT TERM HUP

# Each service in its own session, so a Ctrl-C in the terminal reaches this script only and the
# services are stopped in order, not both at once.
# Sets started_pid (not a command substitution: the service must be this shell's own child, so
# that `wait` can collect its exit code).
start() {  # binary log
  : >"$2"
  setsid "$1" >>"$2" 2>&1 </dev/null &
  started_pid=$!
}

# Waits for http://admin/readyz (up to 120 s); on the process exiting first, prints its log
# tail, stops what was started and exits 1.
wait_ready() {  # name pid admin log
  local name="$1" pid="$2" url="http://$(reachable "$3")/readyz" log="$4" i
  for ((i = 0; i < 1200; i++)); do
    if ! alive "$pid"; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      echo "$name exited (code $rc) before it was ready" >&2
      log_tail "$name" "$log"
      [ "$name" = signaldb-writer ] && writer_rc=$rc || acceptor_rc=$rc
      [ "$name" = signaldb-writer ] && writer_pid="" || acceptor_pid=""
      stop_all
      report_and_exit 1
    fi
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name not ready after 120 s ($url)" >&2
  log_tail "$name" "$log"
  stop_all
  report_and_exit 1
}

echo "starting signaldb-writer and signaldb-acceptor from $bin (logs in $run_dir/)"
start "$writer_bin" "$writer_log"
writer_pid=$started_pid
wait_ready signaldb-writer "$writer_pid" "$writer_admin" "$writer_log"
printf '%-18s ready  gRPC %s  admin http://%s/metrics  store %s  (log %s)\n' \
  signaldb-writer "$writer_grpc" "$(reachable "$writer_admin")" "$store_path" "$writer_log"

start "$acceptor_bin" "$acceptor_log"
acceptor_pid=$started_pid
wait_ready signaldb-acceptor "$acceptor_pid" "$acceptor_admin" "$acceptor_log"
printf '%-18s ready  OTLP/HTTP http://%s  OTLP/gRPC %s  admin http://%s/metrics  forwards to %s  (log %s)\n' \
  signaldb-acceptor "$(reachable "$acceptor_http")" "$acceptor_grpc" "$(reachable "$acceptor_admin")" \
  "${ACCEPTOR_WRITER_ADDR:-127.0.0.1:50061}" "$acceptor_log"

# The example: one span, with ids and times made now.
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
trace_id=$(hex 16)
span_id=$(hex 8)
end_ns=$(date +%s%N)
start_ns=$((end_ns - 25000000))
http_url="http://$(reachable "$acceptor_http")"
cat <<EOF

Send one span (OTLP/JSON):
  curl -sS -X POST $http_url/v1/traces -H 'Content-Type: application/json' -d '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"curl-example"}}]},"scopeSpans":[{"scope":{"name":"run-pipeline"},"spans":[{"traceId":"$trace_id","spanId":"$span_id","name":"hello","kind":2,"startTimeUnixNano":"$start_ns","endTimeUnixNano":"$end_ns"}]}]}]}'

Point an OpenTelemetry SDK at it:
  export OTEL_EXPORTER_OTLP_ENDPOINT=$http_url OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_SERVICE_NAME=my-service
  # or gRPC: OTEL_EXPORTER_OTLP_ENDPOINT=http://$(reachable "$acceptor_grpc") OTEL_EXPORTER_OTLP_PROTOCOL=grpc

See what was stored:
  sqlite3 $store_path "SELECT service_name, name, trace_id, span_id, end_time_unix_nano - start_time_unix_nano AS duration_ns FROM spans ORDER BY id DESC LIMIT 10"

Running; Ctrl-C stops both (the acceptor first, then the writer).
EOF

# Until a signal (the trap) or until a service exits on its own.
while true; do
  for svc in writer acceptor; do
    if [ "$svc" = writer ]; then pid=$writer_pid; log=$writer_log; else pid=$acceptor_pid; log=$acceptor_log; fi
    if ! alive "$pid"; then
      trap '' INT TERM HUP
      rc=0
      wait "$pid" 2>/dev/null || rc=$?
      echo "signaldb-$svc exited on its own (code $rc)" >&2
      log_tail "signaldb-$svc" "$log"
      if [ "$svc" = writer ]; then writer_rc=$rc; writer_pid=""; else acceptor_rc=$rc; acceptor_pid=""; fi
      stop_all
      report_and_exit 1
    fi
  done
  # In the background, so a signal runs the trap at once rather than after the sleep.
  sleep 0.5 &
  wait $! 2>/dev/null || true
done
