#!/usr/bin/env bash
# The SIP benchmark of BENCHMARKS.md: the same presence workload (PUBLISH in, NOTIFY out to
# watchers, over UDP on loopback) against the hub's SIP presence server and against Kamailio's
# presence module, one after the other, on this machine. `presence-hub bench-sip` drives the
# load and reads each server's CPU time and memory from /proc.
#
#   scripts/bench-sip.sh [PRESENTITIES] [WATCHERS] [RATE] [DURATION]     (defaults 1000 5 2000 20)
#
# Needs Debian's kamailio, kamailio-presence-modules, kamailio-sqlite-modules and sqlite3
# (./test.sh installs them). Both servers run without authentication for the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}; W=${2:-5}; RATE=${3:-2000}; DUR=${4:-20}
for b in kamailio sqlite3; do
  command -v $b >/dev/null || { echo "$b not found: apt-get install kamailio kamailio-presence-modules kamailio-sqlite-modules sqlite3" >&2; exit 1; }
done
cargo build --release --locked --quiet
BIN=target/release/presence-hub
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# --- the hub ---------------------------------------------------------------------------------
{
  echo "id,name,sip_uri"
  for ((i = 0; i < N; i++)); do echo "user$i,User $i,sip:user$i@127.0.0.1"; done
} > "$WORK/people.csv"
cat > "$WORK/hub.toml" <<TOML
listen = "127.0.0.1:18081"
data_dir = "$WORK/hub-data"
[log]
level = "warn"
[directory]
import = "$WORK/people.csv"
[sip]
enabled = true
listen = "127.0.0.1:15062"
require_auth = false
max_expires = 3600
[[tokens]]
name = "bench"
role = "admin"
sha256 = "$($BIN hash-token bench-admin-token-0123456789 | tail -1)"
TOML
$BIN --config "$WORK/hub.toml" > "$WORK/hub.log" 2>&1 &
HUB=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
$BIN bench-sip --server 127.0.0.1:15062 --presentities "$N" --watchers "$W" --rate "$RATE" --duration "$DUR" --pid $HUB --label "presence-hub $(git rev-parse --short HEAD)"
kill $HUB; wait $HUB 2>/dev/null || true

# --- Kamailio --------------------------------------------------------------------------------
cat /usr/share/kamailio/db_sqlite/standard-create.sql /usr/share/kamailio/db_sqlite/presence-create.sql | sqlite3 "$WORK/kam.db"
sed -e "s#@DB_PATH@#$WORK/kam.db#g" -e "s#@PORT@#15070#g" -e "s#@ADDR@#127.0.0.1#g" -e "s#^debug=2 #debug=1 #" \
  fixtures/sip/kamailio/presence.cfg.in > "$WORK/kam.cfg"
kamailio -f "$WORK/kam.cfg" -DD -E -m 1024 -M 32 > "$WORK/kam.log" 2>&1 &
KAM=$!
sleep 1
$BIN bench-sip --server 127.0.0.1:15070 --presentities "$N" --watchers "$W" --rate "$RATE" --duration "$DUR" --pid $KAM --label "Kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}')"
kill $KAM; wait $KAM 2>/dev/null || true
