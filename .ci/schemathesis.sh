#!/usr/bin/env bash
# The admin API against its own OpenAPI document: a short schemathesis run (from PyPI,
# pinned) against a patgate serving a fresh store, with the brute-force lockout off and a
# tokens:admin token as Bearer. Fails on any server error, or any answer whose status,
# content type, headers or body the document does not describe. About 70 s in all, once
# patgate is built and schemathesis installed.
#
#   bash .ci/schemathesis.sh                                  # builds target/debug/patgate
#   PATGATE_BIN=target/release/patgate bash .ci/schemathesis.sh
#
# SCHEMATHESIS_MAX_TIME (default 60) bounds schemathesis in seconds, SCHEMATHESIS_SEED
# repeats a run, SCHEMATHESIS_KEEP=1 keeps the temporary folder (config, server log,
# report). The virtualenv is kept in ~/.cache/patgate-schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=${PATGATE_SCHEMATHESIS_VENV:-$HOME/.cache/patgate-schemathesis}
max_time=${SCHEMATHESIS_MAX_TIME:-60}
started=$(date +%s)

# schemathesis, once per machine.
if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "version $version"; then
  echo "installing schemathesis $version from PyPI into $venv"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

bin=${PATGATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --locked --quiet --bin patgate
  bin=target/debug/patgate
fi
bin=$(realpath "$bin")

work=$(mktemp -d)
server=
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
  fi
}
cleanup() {
  stop_server
  if [ -n "${SCHEMATHESIS_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A fresh store; both listeners on ports the kernel picks; the lockout off (schemathesis
# sends bad credentials on purpose); leak reports limited only in name; long polls of at
# most 1s (the event feed would otherwise hold each request for [admin] max_wait).
mkdir -p "$work/repos" "$work/streams"
cat >"$work/patgate.toml" <<EOF
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"

[store]
url = "sqlite://$work/patgate.db"
poll_interval = "50ms"

[brute_force]
enabled = false

[admin]
listen = "127.0.0.1:0"
max_wait = "1s"
leak_reports_per_minute = 1000000

# The smallest valid body names the first scope, "full": let it through, so that what a
# negative case changes in it is what the answer is about.
[policy]
allow_full = true

# File audit streams only here (the document lets any absolute path through).
[audit]
stream_dir = "$work/streams"

[[routes]]
path = "/{org}/{repo}/**"
upstream = "git-http-backend:$work/repos"
rules = "git"
EOF

# The run's credential. Schemathesis revokes, regenerates and narrows every token it can
# see, its own too: on a 401 or 403 it calls this hook again and replays the request, and
# the hook makes a new tokens:admin token (with auditlog:read and auditstreams:manage,
# which tokens:admin does not imply) on the store (as an operator does with the CLI), then
# waits until the server has applied it.
cat >"$work/hooks.py" <<'PY'
import json, os, subprocess, time, urllib.error, urllib.request

import schemathesis


@schemathesis.auth(refresh_interval=3600, retry_on=[401, 403])
class PatgateAdminToken:
    def get(self, case, ctx):
        created = subprocess.run(
            [os.environ["PATGATE_ST_BIN"], "--config", os.environ["PATGATE_ST_CONFIG"], "token", "create",
             "--name", "schemathesis", "--owner", "root", "--scopes", "tokens:admin,auditlog:read,auditstreams:manage", "--orgs", "*",
             "--expires-in", "1d", "--json"],
            check=True, capture_output=True, text=True,
        )
        token = json.loads(created.stdout)["token"]
        probe = urllib.request.Request(
            os.environ["PATGATE_ST_URL"] + "/admin/v1/tokens?limit=1", headers={"Authorization": f"Bearer {token}"}
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=5):
                    return token
            except urllib.error.HTTPError as e:
                if e.code != 401 or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
PY

# Warnings that mean the run tested little (its credential broke, an operation got no data)
# or the document is broken (a pattern or reference it cannot use, servers that name
# another address) fail it too. Not validation_mismatch: PATCH mostly meets revoked tokens
# and scopes that would widen, which the document can only describe in words.
#
# Stateful link inference from Location headers and body URLs is off: it scans every
# string of a 2xx body that looks like a URL, and schemathesis 4.32.5 dies with an
# internal error (an unhandled ValueError from urlsplit) on a token name such as
# "http://[A0e0D09]" that its own generator made and the API echoed back. The API sets no
# Location header and no link between operations lives in a body URL, so nothing is lost.
cat >"$work/schemathesis.toml" <<'TOML'
[phases.stateful.inference]
algorithms = ["dependency-analysis"]

[warnings]
fail-on = ["missing_auth", "missing_test_data", "base_url_mismatch", "missing_deserializer", "unsupported_regex", "unresolvable_reference"]
TOML

RUST_LOG=info "$bin" --config "$work/patgate.toml" serve </dev/null >"$work/server.log" 2>&1 &
server=$!
admin=
for _ in $(seq 300); do
  admin=$(sed -n 's/.*Admin API up.*addr=\([0-9.:]*\).*/\1/p' "$work/server.log" | head -n 1)
  [ -n "$admin" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$admin" ]; then
  echo "patgate did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

# Run from the temporary folder: schemathesis keeps a .schemathesis/ cache where it runs.
# One worker: with two, CPython 3.11's ast.parse, which hypothesis calls from each thread,
# sometimes fails ("AST constructor recursion depth mismatch") and errors the run. The
# outer timeout is a backstop; --max-time and --request-timeout bound a normal run.
set +e
(
  cd "$work"
  PATGATE_ST_BIN=$bin PATGATE_ST_CONFIG=$work/patgate.toml PATGATE_ST_URL=http://$admin \
    SCHEMATHESIS_HOOKS=$work/hooks.py \
    timeout --kill-after=10 $((max_time + 120)) \
    "$venv/bin/st" --config-file "$work/schemathesis.toml" run "http://$admin/admin/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
    --max-time "$max_time" \
    --request-timeout 10 \
    --workers 1 \
    ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
    --generation-database none \
    --no-color
) >"$work/st.log" 2>&1
status=$?
set -e
stop_server

cat "$work/st.log"
if grep -q "panicked" "$work/server.log"; then
  echo "patgate panicked:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
elapsed=$(($(date +%s) - started))
cases=$(sed -n 's/^ *\([0-9]*\) generated.*/\1/p' "$work/st.log" | tail -n 1)
if [ "$status" = 0 ]; then
  echo "schemathesis $version: ok: ${cases:-?} test cases, no failure, in ${elapsed}s"
else
  echo "schemathesis $version: FAILED (exit $status) after ${cases:-?} test cases, in ${elapsed}s" >&2
  exit 1
fi
