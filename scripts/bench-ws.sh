#!/usr/bin/env bash
# Many stream clients against one hub (BENCHMARKS.md, "Stream clients"): for each N in CLIENTS,
# a fresh release hub with PEOPLE people, N watch-all WebSocket clients (and SSE clients, SSE=M)
# opened by `presence-hub bench-ws` in a separate process, the hub's RSS before and with the
# clients idle, then RATE signals/s for SECS s through POST /api/signals, each reaching every
# client: deliveries, frames/s and change → client latency.
#
#   scripts/bench-ws.sh            CLIENTS="2000 8000 10000" PEOPLE=320 RATE=5 SECS=20 SSE=0
#
# Builds nothing: expects the release binary (cargo build --release), or BIN=…. Needs curl and
# python3 (a free port). The hub's fd limit must exceed the clients (ulimit -n; 20000 here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release/presence-hub}
CLIENTS=${CLIENTS:-"2000 8000 10000"}
PEOPLE=${PEOPLE:-320}
RATE=${RATE:-5}
SECS=${SECS:-20}
SSE=${SSE:-0}
[ -x "$BIN" ] || { echo "$BIN not found (cargo build --release)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/h-bench-ws-XXXXXX)
HUB=""
cleanup() { [ -z "$HUB" ] || kill -9 "$HUB" 2>/dev/null || true; wait 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TOKEN=bench-ws-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
TOKEN_SHA=$("$BIN" hash-token "$TOKEN" | tail -1)
{
  echo "id,name,department"
  for ((i = 0; i < PEOPLE; i++)); do echo "p$i,Person $i,Dept $((i % 10))"; done
} > "$WORK/people.csv"
for n in $CLIENTS; do
  port=$(free_port)
  {
    echo "listen = \"127.0.0.1:$port\""
    echo "data_dir = \"$WORK/data-$n\""
    printf '[log]\nlevel = "warn"\n[directory]\nimport = "%s"\n' "$WORK/people.csv"
    printf '[[tokens]]\nname = "bench"\nrole = "admin"\nsha256 = "%s"\n' "$TOKEN_SHA"
    printf '[stream]\nmax_subscribers = %d\n' $((n + SSE + 100))
  } > "$WORK/hub-$n.toml"
  "$BIN" --config "$WORK/hub-$n.toml" > "$WORK/hub-$n.log" 2>&1 &
  HUB=$!
  for ((t = 0; t < 600; t++)); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== $n WebSocket + $SSE SSE clients, $PEOPLE people, $RATE signals/s for $SECS s"
  PRESENCE_HUB_TOKEN=$TOKEN "$BIN" bench-ws --url "http://127.0.0.1:$port" --ws "$n" --sse "$SSE" \
    --people "$PEOPLE" --rate "$RATE" --seconds "$SECS" --pid "$HUB" --json ${DRIVER_ARGS:-} || echo "bench-ws failed (hub log: $(tail -3 "$WORK/hub-$n.log"))"
  kill -9 "$HUB"; wait "$HUB" 2>/dev/null || true; HUB=""
done
