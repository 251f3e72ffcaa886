#!/usr/bin/env bash
# The cluster benchmark of BENCHMARKS.md ("Cluster"): hubs on a three-server NATS JetStream
# cluster, all on this machine, against a single hub.
#
#   scripts/bench-cluster.sh [throughput] [failover] [memory]      (default: all three)
#
# Settings (environment): RATES, SECS, PEOPLE, SETUPS (of single cluster1 cluster3) and
# DRIVER_ARGS (more bench-cluster options) for throughput; KILLS for failover; MEM_PEOPLE,
# MEM_RATE, MEM_SECS, MEM_SETUPS for memory; LEASE_MS the nodes' lease (default 3000); QUIET_MAX_MIN (15) how long to wait for a quiet machine
# (1-minute load below 1.2) before each measured run, NO_WAIT=1 not to.
#
# - throughput: the same open-loop load (`presence-hub bench-cluster`: POST /api/signals in,
#   frames on ?all=true WebSocket streams out, each signal a real change with a unique note)
#   through a single hub without [cluster], one hub with [cluster], and three hubs (pushed to
#   all, watched on all); RATES signals/s (500, 2000, 5000) for SECS (20) s each, 320 people.
# - failover: three hubs with the same `replay` provider (the demo scenario, looped, and the
#   demo directory); KILLS times: kill -9 the node holding the provider's lease, poll the
#   survivors until the lease's new owner runs the provider, restart the killed node.
# - memory: three hubs, then one hub without [cluster], with MEM_PEOPLE people: RSS and owned
#   partitions after start-up and after MEM_SECS s of load at MEM_RATE signals/s.
#
# Builds nothing: expects the release binary (cargo build --release), or BIN=…. Needs Debian's
# nats-server (NATS=… elsewhere), curl and jq. Everything runs in a temp dir under /tmp, on free
# loopback ports; every process started is stopped on exit (KEEP=1 keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release/presence-hub}
NATS=${NATS:-/usr/sbin/nats-server}
RATES=${RATES:-"500 2000 5000"}
SECS=${SECS:-20}
PEOPLE=${PEOPLE:-320}
KILLS=${KILLS:-10}
MEM_PEOPLE=${MEM_PEOPLE:-300000}
MEM_RATE=${MEM_RATE:-5000}
MEM_SECS=${MEM_SECS:-60}
WHAT=${*:-throughput failover memory}
for b in "$BIN" "$NATS"; do [ -x "$b" ] || { echo "$b not found (cargo build --release; apt-get install nats-server)" >&2; exit 1; }; done
for b in curl jq python3; do command -v $b >/dev/null || { echo "$b not found" >&2; exit 1; }; done

WORK=$(mktemp -d /tmp/h-bench-XXXXXX)
RESULTS=$WORK/results.txt
declare -A PID            # name → pid of every process started here
cleanup() {
  for n in "${!PID[@]}"; do kill -9 "${PID[$n]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%T)] $*" >&2; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# Waits (at most QUIET_MAX_MIN minutes, 15) for a 1-minute load average below 1.2; measures
# anyway after, and says so. QUIET=1 when the machine was quiet.
QUIET=1
wait_quiet() {
  QUIET=1
  [ "${NO_WAIT:-0}" = 1 ] && return 0
  local i
  for ((i = 0; i < ${QUIET_MAX_MIN:-15}; i++)); do
    awk '{exit !($1 < 1.2)}' /proc/loadavg && return 0
    log "load $(loadavg): waiting for the machine to be quiet"
    sleep 60
  done
  QUIET=0
  log "load still $(loadavg) after ${QUIET_MAX_MIN:-15} minutes: measuring anyway"
  echo "NOTE: the next run was measured with load $(loadavg) (not quiet after ${QUIET_MAX_MIN:-15} minutes)" >> "$RESULTS"
}

TOKEN=bench-cluster-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
TOKEN_SHA=$("$BIN" hash-token "$TOKEN" | tail -1)
AUTH="authorization: Bearer $TOKEN"

# --- NATS: three servers, one JetStream cluster -------------------------------------------------
declare -a NATS_PORT NATS_HTTP
start_nats() {
  local i routes=() cport=()
  for i in 0 1 2; do NATS_PORT[$i]=$(free_port); NATS_HTTP[$i]=$(free_port); cport[$i]=$(free_port); done
  for i in 0 1 2; do
    routes=()
    for j in 0 1 2; do [ $j = $i ] || routes+=("\"nats-route://127.0.0.1:${cport[$j]}\""); done
    mkdir -p "$WORK/nats$i"
    cat > "$WORK/nats$i.conf" <<CONF
server_name: "n$i"
listen: "127.0.0.1:${NATS_PORT[$i]}"
http: "127.0.0.1:${NATS_HTTP[$i]}"
jetstream { store_dir: "$WORK/nats$i" }
cluster { name: "h-bench", listen: "127.0.0.1:${cport[$i]}", routes: [ $(IFS=,; echo "${routes[*]}") ] }
CONF
    "$NATS" -c "$WORK/nats$i.conf" >> "$WORK/nats$i.log" 2>&1 &
    PID[nats$i]=$!
  done
  # Ready: JetStream on every server and one meta leader that all name.
  local t
  for ((t = 0; t < 200; t++)); do
    local leaders=""
    for i in 0 1 2; do leaders+="$(curl -sf "http://127.0.0.1:${NATS_HTTP[$i]}/jsz" | jq -r '.meta_cluster.leader // empty' 2>/dev/null) "; done
    # shellcheck disable=SC2086
    set -- $leaders
    if [ $# = 3 ] && [ "$1" = "$2" ] && [ "$2" = "$3" ]; then log "NATS cluster up (meta leader $1)"; return 0; fi
    sleep 0.1
  done
  echo "the NATS cluster did not come up; see $WORK/nats*.log" >&2; exit 1
}
NATS_URLS() { echo "\"nats://127.0.0.1:${NATS_PORT[0]}\", \"nats://127.0.0.1:${NATS_PORT[1]}\", \"nats://127.0.0.1:${NATS_PORT[2]}\""; }

# --- directories --------------------------------------------------------------------------------
# p0 … pN-1, with the columns of fixtures/directory/demo.csv (no sip_uri or entra_id).
make_csv() {
  local n=$1 f=$2
  awk -v n="$n" 'BEGIN {
    split("Anna Lars Karin Erik Maria Johan Eva Anders Sara Per Lena Nils Ingrid Olof Åsa Märta", first, " ");
    split("Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsson Persson Svensson Gustafsson Östberg Lind", last, " ");
    split("Ekonomi IT Försäljning Växel Kundtjänst Juridik HR Inköp Produktion Marknad", dept, " ");
    split("Handläggare Utvecklare Säljare Telefonist Chef Controller Jurist Inköpare Tekniker Koordinator", title, " ");
    print "id,name,title,department,email,mobile,phone,extension";
    for (i = 0; i < n; i++) {
      f = first[i % 16 + 1]; l = last[int(i / 16) % 12 + 1];
      printf "p%d,%s %s %d,%s,%s,p%d@bench.example,070-%03d %02d %02d,08-%03d %02d %02d,%d\n",
        i, f, l, i, title[i % 10 + 1], dept[int(i / 7) % 10 + 1], i,
        int(i / 10000) % 1000, int(i / 100) % 100, i % 100,
        int(i / 10000) % 1000, int(i / 100) % 100, i % 100, 100000 + i;
    }
  }' > "$f"
}

# --- hubs ---------------------------------------------------------------------------------------
declare -A HUB_PORT       # name → port
# start_hub NAME CSV PREFIX|- [replay]: starts a hub (PREFIX "-": no [cluster]).
write_hub_config() {
  local name=$1 csv=$2 prefix=$3 replay=${4:-}
  [ -n "${HUB_PORT[$name]:-}" ] || HUB_PORT[$name]=$(free_port)
  mkdir -p "$WORK/$name"
  {
    echo "listen = \"127.0.0.1:${HUB_PORT[$name]}\""
    echo "data_dir = \"$WORK/$name/data\""
    printf '[log]\nformat = "json"\nlevel = "info"\n'
    printf '[directory]\nimport = "%s"\n' "$csv"
    printf '[[tokens]]\nname = "bench"\nrole = "admin"\nsha256 = "%s"\n' "$TOKEN_SHA"
    if [ "$prefix" != - ]; then
      printf '[cluster]\nnats = [%s]\nnode = "%s"\nreplicas = 3\nprefix = "%s"\n' "$(NATS_URLS)" "$name" "$prefix"
      [ -z "${LEASE_MS:-}" ] || printf 'lease_ms = %d\n' "$LEASE_MS"
    fi
    if [ -n "$replay" ]; then
      printf '[[providers]]\ntype = "replay"\nname = "scenario"\nfile = "%s"\nloop = true\n' "$ROOT/fixtures/scenarios/demo.jsonl"
    fi
  } > "$WORK/$name/hub.toml"
}
declare -A START_MS READY_MS
start_hub() {
  local name=$1
  START_MS[$name]=$(now_ms)
  "$BIN" --config "$WORK/$name/hub.toml" >> "$WORK/$name/hub.log" 2>&1 &
  PID[$name]=$!
}
hub_url() { echo "http://127.0.0.1:${HUB_PORT[$1]}"; }
# Starts the hubs named: the first alone until ready (on a fresh prefix it creates the buckets
# and streams), then the others together. Started all at once on a fresh prefix, a node may
# exit with "JetStream bucket …: jetstream request timed out" (see BENCHMARKS.md).
start_hubs() {
  local n
  start_hub "$1"; wait_ready "$1"
  for n in "${@:2}"; do start_hub "$n"; done
  for n in "${@:2}"; do wait_ready "$n"; done
}
wait_ready() {
  local name=$1 t
  for ((t = 0; t < 3000; t++)); do
    curl -sf "$(hub_url "$name")/readyz" >/dev/null 2>&1 && { READY_MS[$name]=$(($(now_ms) - START_MS[$name])); return 0; }
    kill -0 "${PID[$name]}" 2>/dev/null || { echo "hub $name exited; its log:" >&2; tail -20 "$WORK/$name/hub.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "hub $name not ready in 300 s" >&2; exit 1
}
stop_hub() {
  local name=$1 p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PID[$name]"
}
cluster_json() { curl -sf -H "$AUTH" "$(hub_url "$1")/api/cluster"; }
# Waits until the nodes named agree that each of them is alive and owns some partitions, 64 in
# all, and that nothing moved for 3 s.
wait_balanced() {
  local t last="" same=0 s
  for ((t = 0; t < 600; t++)); do
    s=$(cluster_json "$1" | jq -c --argjson n "$#" '[.nodes[] | select(.alive) | {node, p: (.partitions | length)}] | sort_by(.node) | select(length == $n and all(.p > 0) and (map(.p) | add) == 64)' 2>/dev/null || true)
    if [ -n "$s" ] && [ "$s" = "$last" ]; then
      same=$((same + 1))
      [ $same -ge 6 ] && { log "balanced: $s"; return 0; }
    else same=0; fi
    last=$s
    sleep 0.5
  done
  echo "the partitions did not settle: $(cluster_json "$1" | jq -c '.nodes')" >&2; exit 1
}
rss_mb() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
pid_args() { local a=() n; for n in "$@"; do a+=(--pid "$n=${PID[$n]}"); done; echo "${a[@]}"; }

# --- a: throughput and latency -------------------------------------------------------------------
throughput() {
  local csv=$WORK/people-$PEOPLE.csv rate run=0
  make_csv "$PEOPLE" "$csv"
  echo "## throughput and latency ($PEOPLE people, $SECS s per run)" >> "$RESULTS"
  for rate in $RATES; do
    for setup in ${SETUPS:-single cluster1 cluster3}; do
      run=$((run + 1))
      local nodes=() prefix=t$run push watch n
      case $setup in
        single) nodes=(hub-s); prefix=- ;;
        cluster1) nodes=(hub-a) ;;
        cluster3) nodes=(hub-a hub-b hub-c) ;;
      esac
      for n in "${nodes[@]}"; do write_hub_config "$n" "$csv" "$prefix"; rm -rf "$WORK/$n/data"; done
      start_hubs "${nodes[@]}"
      [ "$setup" = single ] || wait_balanced "${nodes[@]}"
      push=$(for n in "${nodes[@]}"; do hub_url "$n"; done | paste -sd,)
      watch=$push
      local pids attempt
      # shellcheck disable=SC2046
      pids=$(pid_args "${nodes[@]}" $( [ "$setup" = single ] || echo nats0 nats1 nats2))
      # When other work took more than a quarter of a core during a run that started on a quiet
      # machine, run it again (at most three times; the table shows the last attempt's
      # "anything else").
      for attempt in 1 2 3; do
        wait_quiet
        log "throughput: $setup at $rate/s, attempt $attempt (load $(loadavg))"
        # shellcheck disable=SC2086
        "$BIN" bench-cluster --push "$push" --watch "$watch" --token "$TOKEN" --rate "$rate" --seconds "$SECS" \
          --people "$PEOPLE" --label "$setup@$rate" $pids ${DRIVER_ARGS:-} --json | tee "$WORK/tp-$setup-$rate.txt" >&2
        tail -1 "$WORK/tp-$setup-$rate.txt" | jq -e '.others_pct < 25' >/dev/null && break
        log "other work used $(tail -1 "$WORK/tp-$setup-$rate.txt" | jq '.others_pct | round') % of a core during the run"
        [ "$QUIET" = 1 ] || break
      done
      tail -1 "$WORK/tp-$setup-$rate.txt" >> "$WORK/tp.jsonl"
      for n in "${nodes[@]}"; do stop_hub "$n"; done
    done
  done
  {
    echo "| setup | offered/s | accepted/s | delivered/s per node | missing (of them a last state) | p50 ms | p99 ms | max ms | CPU % of a core (hubs; NATS; driver; anything else) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    jq -r '"| \(.label | split("@")[0]) | \(.rate) | \(.accepted_per_s | floor) | \([.watch[].delivered_per_s | floor] | map(tostring) | join(" / ")) | \([.watch[] | "\(.missing) (\(.final_missing // "?"))"] | join(" / ")) | \([.watch[].p50_us / 1000 * 100 | round / 100] | map(tostring) | join(" / ")) | \([.watch[].p99_us / 1000 * 100 | round / 100] | map(tostring) | join(" / ")) | \([.watch[].max_us / 1000 * 10 | round / 10] | map(tostring) | join(" / ")) | \([.pids[] | select(.label | startswith("hub")) | .cpu_pct | round] | map(tostring) | join(" + ")); \([.pids[] | select(.label | startswith("nats")) | .cpu_pct | round] | map(tostring) | join(" + ")); \(.driver_pct | round); \(.others_pct | round) |"' "$WORK/tp.jsonl"
  } >> "$RESULTS"
}

# --- b: failover -----------------------------------------------------------------------------------
lease_of() { jq -r --arg p scenario '.leases[] | select(.name == $p) | "\(.owner) \(.expires_at)"' 2>/dev/null; }
failover() {
  local nodes=(hub-a hub-b hub-c) n round csv=$ROOT/fixtures/directory/demo.csv
  for n in "${nodes[@]}"; do write_hub_config "$n" "$csv" f1 replay; rm -rf "$WORK/$n/data"; done
  start_hubs "${nodes[@]}"
  wait_balanced "${nodes[@]}"
  : > "$WORK/failover.tsv"
  for ((round = 1; round <= KILLS; round++)); do
    wait_quiet
    local owner="" exp t_kill t_taken="" t_up="" new="" exp_ms t_log s o e alive=()
    for n in "${nodes[@]}"; do read -r owner exp < <(cluster_json "$n" | lease_of) && [ -n "$owner" ] && break; done
    [ -n "$owner" ] || { echo "no owner of the scenario's lease" >&2; exit 1; }
    for n in "${nodes[@]}"; do [ "$n" = "$owner" ] || alive+=("$n"); done
    t_kill=$(now_ms)
    kill -9 "${PID[$owner]}"
    wait "${PID[$owner]}" 2>/dev/null || true
    unset "PID[$owner]"
    # The lease as the survivors last saw it, until one of them holds it.
    while :; do
      for s in "${alive[@]}"; do
        read -r o e < <(cluster_json "$s" | lease_of) || { o=""; e=""; }
        if [ "$o" = "$owner" ]; then exp=$e
        elif [ -n "$o" ]; then new=$o; t_taken=$(now_ms); break 2; fi
      done
      [ $(($(now_ms) - t_kill)) -lt 30000 ] || { echo "round $round: no survivor took the lease in 30 s" >&2; exit 1; }
      sleep 0.05
    done
    # The new owner runs the provider: its own report says up.
    while :; do
      [ "$(curl -sf -H "$AUTH" "$(hub_url "$new")/api/providers" | jq -r '.[] | select(.name == "scenario") | .state')" = up ] && { t_up=$(now_ms); break; }
      [ $(($(now_ms) - t_kill)) -lt 30000 ] || { echo "round $round: the provider did not come up on $new" >&2; exit 1; }
      sleep 0.05
    done
    exp_ms=$(date -d "$exp" +%s%3N)
    # The new owner's own log: when its provider started (the replay task's first line).
    t_log=$(jq -Rr 'fromjson? | select(.fields.message == "Replay provider starting.") | .timestamp' "$WORK/$new/hub.log" 2>/dev/null | tail -1)
    t_log=$( [ -n "$t_log" ] && date -d "$t_log" +%s%3N || echo "$t_up")
    printf '%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n' "$round" "$owner" "$new" $((exp_ms - t_kill)) $((t_taken - exp_ms)) $((t_log - exp_ms)) $((t_log - t_kill)) "$(loadavg)" >> "$WORK/failover.tsv"
    log "round $round: killed $owner; lease expiry kill+$((exp_ms - t_kill)) ms; $new took it at expiry+$((t_taken - exp_ms)) ms (polled), provider started at expiry+$((t_log - exp_ms)) ms (its log), polled up at expiry+$((t_up - exp_ms)) ms"
    start_hub "$owner"
    wait_ready "$owner"
    wait_balanced "${nodes[@]}"
    # Each node's view of the feed (its own /api/providers): what a console on it shows.
    log "round $round: the feed as each node reports it: $(for n in "${nodes[@]}"; do echo -n "$n=$(curl -sf -H "$AUTH" "$(hub_url "$n")/api/providers" | jq -r '.[] | select(.name == "scenario") | .state') "; done)"
  done
  for n in "${nodes[@]}"; do stop_hub "$n"; done
  {
    echo "## failover ($KILLS kills of the lease owner, lease 3 s)"
    echo "| round | killed | new owner | lease expiry after kill ms | lease seen taken after expiry ms | provider started after expiry ms | provider started after kill ms | load after |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8}' "$WORK/failover.tsv"
    for c in 6 7; do
      sort -n -t$'\t' -k$c "$WORK/failover.tsv" | awk -F'\t' -v c=$c '{v[NR] = $c} END {
        printf "%s: p50 %d ms, max %d ms (n = %d)\n", (c == 6 ? "expiry → provider started" : "kill → provider started"), v[int((NR + 1) / 2)], v[NR], NR }'
    done
  } >> "$RESULTS"
}

# --- c: memory -------------------------------------------------------------------------------------
memory() {
  local csv=$WORK/people-$MEM_PEOPLE.csv n
  make_csv "$MEM_PEOPLE" "$csv"
  echo "## memory ($MEM_PEOPLE people; load $MEM_RATE signals/s for $MEM_SECS s)" >> "$RESULTS"
  echo "| setup | node | start-up to /readyz s | RSS after start-up MB | partitions | RSS after load MB |" >> "$RESULTS"
  echo "|---|---|---|---|---|---|" >> "$RESULTS"
  for setup in ${MEM_SETUPS:-cluster3 single}; do
    local nodes=() prefix=m1 push before=() parts=()
    case $setup in cluster3) nodes=(hub-a hub-b hub-c) ;; single) nodes=(hub-s); prefix=- ;; esac
    wait_quiet
    for n in "${nodes[@]}"; do write_hub_config "$n" "$csv" "$prefix"; rm -rf "$WORK/$n/data"; done
    start_hubs "${nodes[@]}"
    [ "$setup" = single ] || wait_balanced "${nodes[@]}"
    sleep 10
    for n in "${nodes[@]}"; do
      before+=("$(rss_mb "${PID[$n]}")")
      if [ "$setup" = single ]; then parts+=("64 (all)"); else parts+=("$(cluster_json "${nodes[0]}" | jq --arg n "$n" '.nodes[] | select(.node == $n) | .partitions | length')"); fi
    done
    push=$(for n in "${nodes[@]}"; do hub_url "$n"; done | paste -sd,)
    wait_quiet
    log "memory: $setup under load (load $(loadavg))"
    # shellcheck disable=SC2046,SC2086
    "$BIN" bench-cluster --push "$push" --watch "$(hub_url "${nodes[0]}")" --token "$TOKEN" --rate "$MEM_RATE" --seconds "$MEM_SECS" \
      --people "$MEM_PEOPLE" --label "memory-$setup" $(pid_args "${nodes[@]}" $( [ "$setup" = single ] || echo nats0 nats1 nats2)) | tee "$WORK/mem-$setup.txt" >&2
    sleep 5
    local i=0
    for n in "${nodes[@]}"; do
      printf '| %s | %s | %d.%d | %s | %s | %s |\n' "$setup" "$n" $((READY_MS[$n] / 1000)) $((READY_MS[$n] % 1000 / 100)) "${before[$i]}" "${parts[$i]}" "$(rss_mb "${PID[$n]}")" >> "$RESULTS"
      i=$((i + 1))
    done
    if [ "$setup" != single ]; then
      echo "NATS servers RSS MB: $(for i in 0 1 2; do rss_mb "${PID[nats$i]}"; echo -n ' '; done); JetStream store: $(du -sm "$WORK"/nats? | awk '{s += $1} END {print s}') MB" >> "$RESULTS"
    fi
    grep -E "delivered|pushed|machine" "$WORK/mem-$setup.txt" | sed "s/^/    $setup: /" >> "$RESULTS"
    for n in "${nodes[@]}"; do stop_hub "$n"; done
  done
}

{ echo "# bench-cluster $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(nproc) CPUs, $(date -u +%FT%TZ), load at start $(loadavg)"; } > "$RESULTS"
start_nats
for w in $WHAT; do
  case $w in
    throughput|failover|memory) $w ;;
    *) echo "unknown part $w (throughput, failover, memory)" >&2; exit 2 ;;
  esac
done
echo "load at end: $(loadavg)" >> "$RESULTS"
cat "$RESULTS"
