#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable whatever else the
# machine runs, so a change to the request path can be judged without the noise of a
# timed run. Starts the reference nginx upstream and patgate (release build, one worker)
# under valgrind, warms up, zeroes the counters, drives small keep-alive GETs with wrk for
# SECONDS, then prints instructions per request and the patgate functions that cost most
# per request (inclusive). The full profile is kept for callgrind_annotate or kcachegrind.
# Usage: bash benches/profile.sh [SECONDS] [OUT_FILE]     (installs nginx, wrk and valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
out=${2:-target/callgrind.request-path.out}
shared=$PWD/../shared/bench

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v valgrind >/dev/null || need+=(valgrind)
if ((${#need[@]})); then
  echo "Installing ${need[*]}..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/patgate
run=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taken() { ss -Hltn "sport = :$1" | grep -q .; }
free_port() { local p=$1; while taken "$p"; do p=$((20000 + RANDOM % 30000)); done; echo "$p"; }
up=$(free_port 18081)
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" "$shared/nginx-upstream.conf" > "$run/nginx-upstream.conf"
nginx -p "$run/" -c "$run/nginx-upstream.conf" -e "$run/nginx-upstream.err" -g 'daemon off;' & pids+=($!)
pg=$(free_port 18084)
[[ $pg != "$up" ]] || pg=$(free_port $((up + 1)))

cat > "$run/patgate.toml" <<TOML
[server]
listen = "127.0.0.1:$pg"
workers = 1
[admin]
enabled = false
[store]
url = "sqlite://$run/p.db"
[log]
level = "warn"
[[routes]]
path = "/agents/**"
upstream = "http://127.0.0.1:$up"
rules = [{ scope = "agentpools:read" }]
TOML
pat=$("$bin" --config "$run/patgate.toml" token create --name profile --owner bench --scopes agentpools:read --orgs '*' --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
auth="Basic $(printf 'x:%s' "$pat" | base64 -w0)"

valgrind --tool=callgrind --callgrind-out-file="$run/cg.out" "$bin" --config "$run/patgate.toml" serve 2>"$run/valgrind.err" & vg=$!; pids+=($vg)
url="http://127.0.0.1:$pg/agents/pool"
for _ in $(seq 300); do
  [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H "Authorization: $auth" "$url" || true) == 200 ]] && break
  sleep 0.2
done
[[ $(curl -s -o /dev/null --max-time 5 -w '%{http_code}' -H "Authorization: $auth" "$url" || true) == 200 ]] \
  || { echo "patgate under valgrind did not answer 200" >&2; cat "$run/valgrind.err" >&2; exit 1; }

# Warm up (connections, upstream connections, caches), then count only the measured load.
wrk -t1 -c8 -d2s -H "Authorization: $auth" "$url" >/dev/null
callgrind_control -z "$vg" >/dev/null 2>&1
n=$(wrk -t1 -c8 -d"${secs}s" -H "Authorization: $auth" "$url" | awk '/requests in/ { print $1 }')
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
dump=$(ls -t "$run"/cg.out.* | head -n 1)
mkdir -p "$(dirname "$out")"
cp "$dump" "$out"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }')

echo "$n requests in ${secs} s under callgrind (wrk -t1 -c8, one patgate worker)"
awk -v t="$total" -v n="$n" 'BEGIN { printf "instructions per request: %d\n", t / n }'
echo "patgate functions, instructions per request (inclusive):"
callgrind_annotate --threshold=100 --inclusive=yes --auto=no "$out" 2>/dev/null |
  awk -v n="$n" 'match($0, / [^ :]+:patgate::[^ ]+ \[/) {
      f = substr($0, RSTART + 1, RLENGTH - 3); sub(/^[^:]+:/, "", f)
      v = $1; gsub(/,/, "", v)
      if (!seen[f]++) printf "  %7d  %s\n", v / n, f
    }' | head -n 25
echo "full profile: $out"
