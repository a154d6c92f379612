#!/usr/bin/env bash
# What metrics and the audit trail cost the request path: two patgate instances from one
# binary, the same routes and token, side by side in one run, the target taking turns round
# by round so that the shared machine's noise hits both alike:
#   on   [metrics] enabled = true, [audit] allowed_requests = "per_minute" (the defaults:
#        every request counted by route, method class and status, its latency in a histogram,
#        its authentication outcome; allowed requests counted per token and minute for the
#        audit trail)
#   off  [metrics] enabled = false, [audit] allowed_requests = "none"
# Workloads (wrk, against the reference nginx upstream `return 200`), each ROUNDS rounds of
# DURATION_S seconds per target:
#   get     small GETs over 64 kept-alive connections
#   close   small GETs, a new TCP connection each, 16 at a time
# Printed per workload and target: the medians over the rounds of req/s and of the CPU time
# patgate spent per request (user + system, in ns, summed over its threads from
# /proc/PID/task/*/schedstat: nanoseconds, not the 10 ms ticks of /proc/PID/stat), then
# on/off. The cost to hold: CPU per request on/off under 1.05.
# Usage: bash benches/observe.sh [DURATION_S] [ROUNDS]   (defaults 5 5; about 2 minutes
#        after the build; installs nginx-light and wrk if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-5}
rounds=${2:-5}
[[ $dur =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] \
  || { echo "usage: bash benches/observe.sh [DURATION_S] [ROUNDS]   (whole numbers, at least 1)" >&2; exit 2; }
die() { echo "$*" >&2; exit 1; }

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
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
  [ -f "$run/nginx-upstream.pid" ] && kill "$(cat "$run/nginx-upstream.pid")" 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taken() { ss -Hltn "sport = :$1" | grep -q .; }
free_port() { local p=$((20000 + RANDOM % 30000)); while taken "$p"; do p=$((20000 + RANDOM % 30000)); done; echo "$p"; }
up=$(free_port)
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" ../shared/bench/nginx-upstream.conf > "$run/nginx-upstream.conf"
nginx -p "$run" -c "$run/nginx-upstream.conf"

conf() { # name port metrics allowed_requests
  cat > "$run/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$2"
[admin]
listen = "127.0.0.1:0"
[store]
url = "sqlite://$run/p.db"
[log]
level = "warn"
[metrics]
enabled = $3
[audit]
allowed_requests = "$4"
[[routes]]
path = "/agents/**"
upstream = "http://127.0.0.1:$up"
rules = [{ scope = "agentpools:read" }]
TOML
}
port_on=$(free_port)
port_off=$(free_port)
while [ "$port_off" = "$port_on" ]; do port_off=$(free_port); done
conf on "$port_on" true per_minute
conf off "$port_off" false none
pat=$("$bin" --config "$run/on.toml" token create --name observe --owner bench --scopes agentpools:read --orgs '*' --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
auth="Basic $(printf 'x:%s' "$pat" | base64 -w0)"
[[ $auth =~ ^Basic\ [A-Za-z0-9+/=]+$ ]] || die "could not make a token"

declare -A pid port
for t in on off; do
  "$bin" --config "$run/$t.toml" serve 2>>"$run/$t.log" &
  pid[$t]=$!
  pids+=("${pid[$t]}")
done
port[on]=$port_on
port[off]=$port_off
for t in on off; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $auth" "http://127.0.0.1:${port[$t]}/agents/x" || true)" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $auth" "http://127.0.0.1:${port[$t]}/agents/x")" = 200 ] \
    || die "patgate ($t) does not answer 200: $(tail -n 5 "$run/$t.log")"
done

cpu_ns() { # pid: user + system ns of all its threads
  local f sum=0 v
  for f in /proc/"$1"/task/*/schedstat; do
    read -r v _ < "$f" || continue
    sum=$((sum + v))
  done
  echo "$sum"
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A rps cpu
for round in $(seq "$rounds"); do
  for w in get close; do
    order=(on off)
    ((round % 2)) || order=(off on)
    for t in "${order[@]}"; do
      case $w in
        get) args=(-t1 -c64) ;;
        close) args=(-t1 -c16 -H 'Connection: close') ;;
      esac
      before=$(cpu_ns "${pid[$t]}")
      out=$(wrk "${args[@]}" -d"${dur}s" -H "Authorization: $auth" "http://127.0.0.1:${port[$t]}/agents/x")
      after=$(cpu_ns "${pid[$t]}")
      requests=$(awk '/requests in/ { print $1 }' <<<"$out")
      if grep -q 'Non-2xx' <<<"$out"; then die "$t $w: non-2xx answers: $out"; fi
      r=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
      rps[$w,$t]+="$r "
      cpu[$w,$t]+="$(( (after - before) / requests )) "
    done
  done
  echo "round $round/$rounds done" >&2
done

printf '\n%-6s %-4s %12s %16s\n' workload side 'req/s' 'CPU ns/request'
for w in get close; do
  for t in on off; do
    printf '%-6s %-4s %12s %16s\n' "$w" "$t" \
      "$(tr ' ' '\n' <<<"${rps[$w,$t]}" | grep . | median)" "$(tr ' ' '\n' <<<"${cpu[$w,$t]}" | grep . | median)"
  done
done
echo
for w in get close; do
  c_on=$(tr ' ' '\n' <<<"${cpu[$w,on]}" | grep . | median)
  c_off=$(tr ' ' '\n' <<<"${cpu[$w,off]}" | grep . | median)
  r_on=$(tr ' ' '\n' <<<"${rps[$w,on]}" | grep . | median)
  r_off=$(tr ' ' '\n' <<<"${rps[$w,off]}" | grep . | median)
  awk -v w="$w" -v con="$c_on" -v coff="$c_off" -v ron="$r_on" -v roff="$r_off" \
    'BEGIN { printf "%s: CPU per request on/off %.3f, req/s on/off %.3f\n", w, con / coff, ron / roff }'
done
echo "$(date '+%F %T %Z'), load average $(cut -d' ' -f1-3 /proc/loadavg), $dur s x $rounds rounds"
