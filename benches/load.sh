#!/usr/bin/env bash
# Load benchmark: `pvc-guard serve` against two baselines on the same
# stack (benches/baseline_stack.rs), all on 127.0.0.1, driven by the same
# load generators with the same bodies and connection counts:
#   no-op       benches/noop_webhook.rs: reads the body, answers a constant
#   reference   benches/reference_webhook.rs: kube's AdmissionReview types
#               and a one-operation patch, as the kube-rs example does
# and by:
#   HTTP/2      h2load (Debian: nghttp2-client), one stream per connection
#   HTTP/1.1    wrk (Debian: wrk), keep-alive
#   handshakes  openssl s_time -new: full TLS handshakes, one at a time
# The figures of merit are the ratios pvc-guard/no-op and
# pvc-guard/reference of each triple of runs, taken back to back, because
# absolute numbers drift with the machine.
#
# Usage: benches/load.sh                 (about 8 minutes with the defaults)
# Knobs (environment): DURATION=4 WARMUP=1 CONNECTIONS="1 16 64"
#   CASES="mutate:pg mutate:nginx mutate:large validate:pg" PROTOCOLS="h2 h1"
#   HANDSHAKE_SECONDS=5 NICE=0 (niceness of servers and load generators)
#   NO_BUILD=1 (use the binaries already in target/release)
# Prints markdown tables; BENCHMARKS.md explains them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
CASES=${CASES:-"mutate:pg mutate:nginx mutate:large validate:pg"}
PROTOCOLS=${PROTOCOLS:-"h2 h1"}
HANDSHAKE_SECONDS=${HANDSHAKE_SECONDS:-5}
NICE=${NICE:-0}
GUARD_ADDR=${GUARD_ADDR:-127.0.0.1:18443}
NOOP_ADDR=${NOOP_ADDR:-127.0.0.1:18444}
REF_ADDR=${REF_ADDR:-127.0.0.1:18445}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# --- install -----------------------------------------------------------------
need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}" >/dev/null
fi

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --locked --bin pvc-guard --example noop_webhook \
    --example reference_webhook >&2
fi
GUARD_BIN=$TARGET_DIR/release/pvc-guard
NOOP_BIN=$TARGET_DIR/release/examples/noop_webhook
REF_BIN=$TARGET_DIR/release/examples/reference_webhook

declare -A BODY=(
  [nginx]=tests/data/admission/nginx-stateless.create.json
  [pg]=tests/data/admission/pg-no-volume.create.json
  [large]=benches/data/large-deployment.create.json
)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- servers -----------------------------------------------------------------
# pvc-guard logs one line per decision to stderr, as in a pod; a file keeps
# that cost in the measurement without flooding the terminal.
nice -n "$NICE" "$GUARD_BIN" serve --listen "$GUARD_ADDR" 2>"$WORK/guard.log" &
GUARD_PID=$!
PIDS+=("$GUARD_PID")
nice -n "$NICE" "$NOOP_BIN" "$NOOP_ADDR" 2>"$WORK/noop.log" &
NOOP_PID=$!
PIDS+=("$NOOP_PID")
nice -n "$NICE" "$REF_BIN" "$REF_ADDR" 2>"$WORK/reference.log" &
REF_PID=$!
PIDS+=("$REF_PID")

wait_port() {
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}
wait_port "$GUARD_ADDR"
wait_port "$NOOP_ADDR"
wait_port "$REF_ADDR"

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

sleep 1
GUARD_IDLE=$(status_kib "$GUARD_PID" VmRSS)
NOOP_IDLE=$(status_kib "$NOOP_PID" VmRSS)
REF_IDLE=$(status_kib "$REF_PID" VmRSS)

# Sanity: all answer, and pvc-guard and the reference really patch.
for addr in "$GUARD_ADDR" "$NOOP_ADDR" "$REF_ADDR"; do
  code=$(curl -sk -o "$WORK/answer.json" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"${BODY[pg]}" "https://$addr/mutate")
  [ "$code" = 200 ] || { echo "https://$addr/mutate answered $code" >&2; exit 1; }
done
curl -sk -H 'content-type: application/json' --data-binary @"${BODY[pg]}" \
  "https://$GUARD_ADDR/mutate" | jq -e '.response.patch | length > 0' >/dev/null ||
  { echo "pvc-guard returned no patch for the postgres body" >&2; exit 1; }
curl -sk -H 'content-type: application/json' --data-binary @"${BODY[pg]}" \
  "https://$REF_ADDR/mutate" |
  # kube-core writes the patch as an array of bytes, which the API server
  # (Go's []byte) reads as it reads base64.
  jq -e '.response.patch | (if type == "string" then @base64d else implode end) | fromjson | length == 1' >/dev/null ||
  { echo "the reference webhook returned no one-operation patch" >&2; exit 1; }

# --- load --------------------------------------------------------------------
cat >"$WORK/wrk.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY_FILE"), "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

# Runs one load; prints "req/s p50_us p99_us errors".
run_h2() { # addr path body conns
  local log=$WORK/h2load.log out
  rm -f "$log"
  out=$(nice -n "$NICE" h2load -t 1 -c "$4" -m 1 -D "$DURATION" --warm-up-time="$WARMUP" \
    -H 'content-type: application/json' -d "$3" --log-file="$log" "https://$1$2" 2>&1) ||
    { echo "$out" >&2; return 1; }
  local rps ok
  rps=$(sed -n 's/^finished in .*s, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
  local total
  total=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' <<<"$out")
  # The log holds each request's status and microseconds to its response.
  cut -f3 "$log" | sort -n >"$log.sorted"
  local n p50 p99
  n=$(wc -l <"$log.sorted")
  p50=$(sed -n "$(((n * 50 + 99) / 100))p" "$log.sorted")
  p99=$(sed -n "$(((n * 99 + 99) / 100))p" "$log.sorted")
  echo "$rps $p50 $p99 $((total - ok))"
}

run_h1() { # addr path body conns
  local out
  out=$(BODY_FILE=$3 nice -n "$NICE" wrk -t 1 -c "$4" -d "$((DURATION + WARMUP))s" \
    -s "$WORK/wrk.lua" "https://$1$2" 2>&1) || { echo "$out" >&2; return 1; }
  awk '$1 == "RESULT" {printf "%.0f %d %d %d\n", $2 / ($3 / 1e6), $4, $5, $6}' <<<"$out"
}

ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }

# Server CPU per request, in microseconds, from the process's own counters.
measure() { # pid proto addr path body conns
  local before after r
  before=$(cpu_ticks "$1")
  r=$("run_$2" "$3" "$4" "$5" "$6")
  after=$(cpu_ticks "$1")
  local rps=${r%% *}
  local cpu
  cpu=$(awk -v t="$((after - before))" -v hz="$TICK" -v rps="$rps" -v d="$DURATION" -v w="$WARMUP" \
    'BEGIN {printf "%.0f", (rps > 0 ? t / hz * 1e6 / (rps * (d + w)) : 0)}')
  echo "$r $cpu"
}

echo
echo "pvc-guard $(git describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, $(uname -r)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); duration ${DURATION}s after ${WARMUP}s warm-up; one request in flight per connection"
echo
echo "| proto | endpoint | body | conns | pvc-guard req/s | p50 ms | p99 ms | no-op req/s | p50 ms | p99 ms | reference req/s | p50 ms | p99 ms | guard/no-op | guard/reference | CPU us/req guard / no-op / reference | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for proto in $PROTOCOLS; do
  for case in $CASES; do
    endpoint=${case%%:*} body=${case##*:}
    for c in $CONNECTIONS; do
      read -r g_rps g_p50 g_p99 g_err g_cpu < <(measure "$GUARD_PID" "$proto" "$GUARD_ADDR" "/$endpoint" "${BODY[$body]}" "$c")
      read -r n_rps n_p50 n_p99 n_err n_cpu < <(measure "$NOOP_PID" "$proto" "$NOOP_ADDR" "/$endpoint" "${BODY[$body]}" "$c")
      read -r r_rps r_p50 r_p99 r_err r_cpu < <(measure "$REF_PID" "$proto" "$REF_ADDR" "/$endpoint" "${BODY[$body]}" "$c")
      printf '| %s | /%s | %s | %d | %.0f | %s | %s | %.0f | %s | %s | %.0f | %s | %s | **%s** | **%s** | %s / %s / %s | %s |\n' \
        "$proto" "$endpoint" "$body" "$c" "$g_rps" "$(ms "$g_p50")" "$(ms "$g_p99")" \
        "$n_rps" "$(ms "$n_p50")" "$(ms "$n_p99")" "$r_rps" "$(ms "$r_p50")" "$(ms "$r_p99")" \
        "$(ratio "$g_rps" "$n_rps")" "$(ratio "$g_rps" "$r_rps")" \
        "$g_cpu" "$n_cpu" "$r_cpu" "$((g_err + n_err + r_err))"
    done
  done
done

# --- full handshakes ---------------------------------------------------------
handshakes() { # pid addr -> "conns/s cpu_us_per_handshake"
  local before after out n t0 t1
  before=$(cpu_ticks "$1")
  t0=$(date +%s.%N)
  out=$(nice -n "$NICE" openssl s_time -connect "$2" -new -time "$HANDSHAKE_SECONDS" 2>&1 </dev/null)
  t1=$(date +%s.%N)
  after=$(cpu_ticks "$1")
  n=$(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' <<<"$out" | head -1)
  awk -v n="${n:-0}" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
    -v t="$((after - before))" -v hz="$TICK" \
    'BEGIN {printf "%.0f %.0f\n", n / s, (n > 0 ? t / hz * 1e6 / n : 0)}'
}
echo
echo "Full TLS handshakes (openssl s_time -new, one connection at a time, TLS 1.3):"
echo
echo "| server | handshakes/s | server CPU us/handshake |"
echo "|---|---|---|"
read -r g_hs g_hcpu < <(handshakes "$GUARD_PID" "$GUARD_ADDR")
read -r n_hs n_hcpu < <(handshakes "$NOOP_PID" "$NOOP_ADDR")
read -r r_hs r_hcpu < <(handshakes "$REF_PID" "$REF_ADDR")
echo "| pvc-guard | $g_hs | $g_hcpu |"
echo "| no-op | $n_hs | $n_hcpu |"
echo "| reference | $r_hs | $r_hcpu |"
echo "| ratio pvc-guard/no-op | $(ratio "$g_hs" "$n_hs") | $(ratio "$g_hcpu" "$n_hcpu") |"

# --- memory ------------------------------------------------------------------
sleep 1
echo
echo "| server | RSS idle at start MiB | peak RSS (VmHWM) MiB | RSS after load MiB |"
echo "|---|---|---|---|"
echo "| pvc-guard | $(mib "$GUARD_IDLE") | $(mib "$(status_kib "$GUARD_PID" VmHWM)") | $(mib "$(status_kib "$GUARD_PID" VmRSS)") |"
echo "| no-op | $(mib "$NOOP_IDLE") | $(mib "$(status_kib "$NOOP_PID" VmHWM)") | $(mib "$(status_kib "$NOOP_PID" VmRSS)") |"
echo "| reference | $(mib "$REF_IDLE") | $(mib "$(status_kib "$REF_PID" VmHWM)") | $(mib "$(status_kib "$REF_PID" VmRSS)") |"
echo
echo "decisions logged by pvc-guard: $(grep -c 'admission decision' "$WORK/guard.log" || true)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
