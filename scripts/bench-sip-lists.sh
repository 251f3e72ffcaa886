#!/usr/bin/env bash
# The resource-list benchmark of BENCHMARKS.md ("SIP resource lists"): 1,000 busy lamps watched
# through the hub's SIP server as 1,000 single subscriptions and as 2 resource lists of 500
# (RFC 4662), then by several consoles at once, with the render cache on and off. The same
# PUBLISH load (PIDF, open loop) each time; `presence-hub bench-sip` counts the NOTIFYs and the
# people's updates they carry, times each update and reads the hub's CPU from /proc.
#
#   scripts/bench-sip-lists.sh [RATE] [DURATION] [CONSOLES] [TRANSPORT]   (defaults 1000 20 5 tcp)
#
# TRANSPORT is the watchers' (udp or tcp); PUBLISHes go over UDP. No authentication.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}; DUR=${2:-20}; C=${3:-5}; T=${4:-tcp}
N=1000
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/presence-hub
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
{
  echo "id,name,sip_uri"
  for ((i = 0; i < N; i++)); do echo "user$i,User $i,sip:user$i@127.0.0.1"; done
} > "$WORK/people.csv"
TOKEN=$($BIN hash-token bench-admin-token-0123456789 | tail -1)

# run LABEL RENDER_CACHE LISTS WATCHERS
run() {
  local label=$1 cache=$2 lists=$3 watchers=$4
  rm -rf "$WORK/hub-data"
  cat > "$WORK/hub.toml" <<TOML
listen = "127.0.0.1:18082"
data_dir = "$WORK/hub-data"
[log]
level = "warn"
[directory]
import = "$WORK/people.csv"
[sip]
enabled = true
listen = "127.0.0.1:15063"
require_auth = false
max_expires = 3600
render_cache = $cache
TOML
  if [ "$lists" -gt 0 ]; then
    local per=$((N / lists))
    for ((k = 0; k < lists; k++)); do
      {
        echo "[[sip.lists]]"
        echo "uri = \"sip:lamps$k@127.0.0.1\""
        printf 'members = ['
        for ((i = k * per; i < (k + 1) * per; i++)); do printf '"user%d",' "$i"; done
        echo ']'
      } >> "$WORK/hub.toml"
    done
  fi
  cat >> "$WORK/hub.toml" <<TOML
[[tokens]]
name = "bench"
role = "admin"
sha256 = "$TOKEN"
TOML
  $BIN --config "$WORK/hub.toml" > "$WORK/hub.log" 2>&1 &
  local hub=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18082/readyz >/dev/null && break; sleep 0.1; done
  $BIN bench-sip --server 127.0.0.1:15063 --presentities "$N" --watchers "$watchers" --lists "$lists" \
    --transport "$T" --rate "$RATE" --duration "$DUR" --pid $hub --label "$label"
  curl -sf -H 'Authorization: Bearer bench-admin-token-0123456789' http://127.0.0.1:18082/api/providers \
    | python3 -c 'import json,sys; d=[p for p in json.load(sys.stdin) if p["name"]=="sip"][0]["details"]; print("  hub: renders %d, render cache hits %d, NOTIFYs sent %d" % (d["renders"], d["render_cache_hits"], d["notifies_sent"]))'
  kill $hub; wait $hub 2>/dev/null || true
}

run "1,000 single subscriptions" true 0 1
run "2 lists of 500" true 2 1
run "$C consoles x 1,000 single subscriptions, render cache on" true 0 "$C"
run "$C consoles x 1,000 single subscriptions, render cache off" false 0 "$C"
run "$C consoles x 2 lists of 500, render cache on" true 2 "$C"
run "$C consoles x 2 lists of 500, render cache off" false 2 "$C"
