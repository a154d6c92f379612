#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable whatever else the
# machine runs, so a change to the request path can be judged without the noise of a
# timed run. Starts the reference nginx upstream and patgate (release build, one worker)
# under valgrind, warms up, zeroes the counters, drives small keep-alive GETs with wrk for
# SECONDS, then prints instructions per request and the patgate functions that cost most
# per request (inclusive). The full profile is kept for callgrind_annotate or kcachegrind.
# The reference nginx proxy (../shared/bench/nginx-proxy.conf, one process) is counted the
# same way in the same run, for the ratio.
# WORKLOAD=close counts requests that each come on a new connection (`Connection: close`),
# where the connection's own setup and teardown are part of every request.
# Usage: bash benches/profile.sh [SECONDS] [OUT_FILE]     (installs nginx, wrk and valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
out=${2:-target/callgrind.request-path.out}
workload=${WORKLOAD:-keepalive}
case $workload in
  keepalive) wrk_extra=() ;;
  close) wrk_extra=(-H 'Connection: close') ;;
  *) echo "WORKLOAD is keepalive or close, not $workload" >&2; exit 2 ;;
esac
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

# The reference nginx proxy, admitting the same Authorization value, for the same count.
px=$(free_port 18082)
[[ $px != "$up" && $px != "$pg" ]] || px=$(free_port $((pg + 1)))
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" -e "s/127\.0\.0\.1:18082/127.0.0.1:$px/" \
    -e "s|\"Basic [^\"]*\" 1;|\"$auth\" 1;|" "$shared/nginx-proxy.conf" > "$run/nginx-proxy.conf"

# Under callgrind: starts `proxy` (a command), waits for a 200 from `url`, warms up
# (connections, upstream connections, caches), then counts only the measured load.
# Sets `requests` and `instructions`, and keeps the profile as `out`.
count() { # name url out command...
  local name=$1 url=$2 out=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$run/$name.cg" "$@" 2>"$run/$name.valgrind" & local vg=$!; pids+=($vg)
  local _
  for _ in $(seq 300); do
    [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H "Authorization: $auth" "$url" || true) == 200 ]] && break
    sleep 0.2
  done
  [[ $(curl -s -o /dev/null --max-time 5 -w '%{http_code}' -H "Authorization: $auth" "$url" || true) == 200 ]] \
    || { echo "$name under valgrind did not answer 200" >&2; cat "$run/$name.valgrind" >&2; exit 1; }
  wrk -t1 -c8 -d2s -H "Authorization: $auth" "${wrk_extra[@]}" "$url" >/dev/null
  callgrind_control -z "$vg" >/dev/null 2>&1
  requests=$(wrk -t1 -c8 -d"${secs}s" -H "Authorization: $auth" "${wrk_extra[@]}" "$url" | awk '/requests in/ { print $1 }')
  callgrind_control -d "$vg" >/dev/null 2>&1
  sleep 1
  local dump
  dump=$(ls -t "$run/$name.cg".* | head -n 1)
  mkdir -p "$(dirname "$out")"
  cp "$dump" "$out"
  kill "$vg" 2>/dev/null || true
  instructions=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }')
}

count patgate "http://127.0.0.1:$pg/agents/pool" "$out" "$bin" --config "$run/patgate.toml" serve
n=$requests total=$instructions
count nginx "http://127.0.0.1:$px/agents/pool" "${out%.out}.nginx.out" \
  nginx -p "$run/" -c "$run/nginx-proxy.conf" -e "$run/nginx-proxy.err" -g 'daemon off; master_process off;'
ng_n=$requests ng_total=$instructions

echo "wrk -t1 -c8 ($workload) for ${secs} s under callgrind, one worker each: patgate $n requests, nginx $ng_n"
awk -v t="$total" -v n="$n" -v gt="$ng_total" -v gn="$ng_n" 'BEGIN {
  printf "instructions per request: patgate %d, nginx %d (patgate/nginx %.2f)\n", t / n, gt / gn, (t / n) / (gt / gn) }'
echo "patgate functions, instructions per request (inclusive):"
callgrind_annotate --threshold=100 --inclusive=yes --auto=no "$out" 2>/dev/null |
  awk -v n="$n" 'match($0, / [^ :]+:patgate::[^ ]+ \[/) {
      f = substr($0, RSTART + 1, RLENGTH - 3); sub(/^[^:]+:/, "", f)
      v = $1; gsub(/,/, "", v)
      if (!seen[f]++) printf "  %7d  %s\n", v / n, f
    }' | head -n 25
echo "full profiles: $out, ${out%.out}.nginx.out"
