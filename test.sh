#!/usr/bin/env bash
# Runs every test of presence-hub. This is the README's test command and what CI runs.
# It installs what the tests need on a fresh Debian machine, then runs the whole workspace's
# tests (unit, table-driven policy, parser fuzz, HTTP/WebSocket/SSE end-to-end, crash test,
# the web console in headless Chromium, SIP against Kamailio and sipp, the LDAP directory source
# against slapd, the OpenID provider peer, the NATS JetStream cluster peer), then builds the production configuration
# (--no-default-features) and checks it has no simulators, and, when ../shared/checks/contract is
# present, runs the API contract check on a release build.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)     # bundled SQLite is C
command -v curl >/dev/null 2>&1 || need+=(curl)            # contract check
command -v chromium >/dev/null 2>&1 || need+=(chromium)    # browser tests (tests/browser.rs)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Chromium needs a font to render text; Debian's chromium pulls one in, a minimal image may not.
fc-list 2>/dev/null | grep -q . || need+=(fonts-dejavu-core)
# SIP peers (tests/common/kamailio.rs, tests/kamailio_peer.rs): a Kamailio presence server with
# presence_dialoginfo over SQLite, and sipp. The tests start their own Kamailio on a loopback port
# (Debian's init script does not start the packaged one: RUN_KAMAILIO=no).
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
compgen -G '/usr/lib/*/kamailio/modules/presence_dialoginfo.so' >/dev/null || need+=(kamailio-presence-modules)
compgen -G '/usr/lib/*/kamailio/modules/db_sqlite.so' >/dev/null || need+=(kamailio-sqlite-modules)
compgen -G '/usr/lib/*/kamailio/modules/tls.so' >/dev/null || need+=(kamailio-tls-modules)       # SIP over TLS peer
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)                # creates Kamailio's DB
# The ldap directory source's peer (simulators/src/slapd.rs, tests/ldap.rs): the tests start their
# own slapd on loopback ports with a generated config; the packaged server is not used.
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need+=(ldap-utils)
# The OpenID provider peer (tests/common/oidc.rs, tests/oidc/provider.mjs): the npm package
# oidc-provider on Node.js (20.12 or later), started by the tests on a loopback port.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The NATS JetStream cluster peer (tests/common/nats.rs, tests/nats_peer.rs): Debian's nats-server
# (2.9), three of them started by the tests on loopback ports with generated configs. The packaged
# service (127.0.0.1:4222, no JetStream) is not used; when this script installs the package it
# stops and disables that service again where systemd runs it.
nats_new=false
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || { need+=(nats-server); nats_new=true; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    if $nats_new && [ -d /run/systemd/system ]; then
      systemctl disable --now nats-server.service >/dev/null 2>&1 || true
    fi
  else
    echo "test.sh: please install: ${need[*]} (apt-get install ${need[*]})" >&2; exit 1
  fi
fi

# The peer's packages, exactly as tests/oidc/package-lock.json pins them; again only when the
# lockfile is newer than the last install (npm writes node_modules/.package-lock.json).
if [ ! -f tests/oidc/node_modules/.package-lock.json ] \
   || [ tests/oidc/package-lock.json -nt tests/oidc/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund
fi

cargo test --workspace --locked

# The production configuration: without the `demo` feature, so without the simulators. Built
# in the test profile, whose dependencies the tests just compiled (a cold release build of
# every dependency would add minutes); `--release` changes no code. Deployments use
# `cargo build --release --no-default-features`.
cargo build --locked --no-default-features
prod_deps=$(cargo tree --locked -e normal --no-default-features -p presence-hub)
if grep -q presence-simulators <<<"$prod_deps"; then
  echo "test.sh: the production build (--no-default-features) links presence-simulators:" >&2
  grep presence-simulators <<<"$prod_deps" >&2
  exit 1
fi

if [ -x ../shared/checks/contract ]; then
  cargo build --release --locked
  BIN="${CARGO_TARGET_DIR:-target}/release/presence-hub" ../shared/checks/contract
fi
