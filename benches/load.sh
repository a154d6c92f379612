#!/usr/bin/env bash
# Side-by-side load, in one run on one machine: the same wrk load straight to an upstream
# (direct), through nginx as a reverse proxy that admits one Authorization value (the
# reference ../shared/bench/nginx-proxy.conf, one worker), and through patgate (token lookup,
# route, scope check) twice: with its default of one worker per core, and with one worker
# (patgate-1w), since wrk and the upstream share the cores. Small GETs over keep-alive at 64 connections, ROUNDS interleaved rounds of
# DURATION_S seconds each (medians taken, so noise hits every side alike), then one 1 GiB
# chunked POST through each. Prints one table with the ratios and patgate's peak RSS, and
# the CPU time each proxy spent per small request (user + system, and the user part, from
# /proc: steadier on a shared machine than requests per second, which depend on what else
# runs).
# Usage: bash benches/load.sh [DURATION_S] [ROUNDS]     (loopback only; installs nginx and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
rounds=${2:-3}
shared=$PWD/../shared/bench

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
SECONDS=0
pids=()
cleanup() {
  local p t
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do # at most 5 s each, then SIGKILL
    for t in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taken() { ss -Hltn "sport = :$1" | grep -q .; }
free_port() { # preferred port -> a free one not yet handed out
  local p=$1
  while taken "$p" || [[ " ${ports[*]:-} " == *" $p "* ]]; do p=$((20000 + RANDOM % 30000)); done
  echo "$p"
}
ports=()
up=$(free_port 18081); ports+=("$up")
px=$(free_port 18082); ports+=("$px")
sink=$(free_port 18083); ports+=("$sink")
pg=$(free_port 18084); ports+=("$pg")
pg1=$(free_port 18085); ports+=("$pg1")

wait_http() { # url: up to 10 s for any HTTP answer
  local t
  for t in $(seq 100); do
    [[ $(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$1" || true) != 000 ]] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; exit 1
}

# patgate: one route for the small GETs (to the nginx upstream), one for the POST (to the sink).
cat > "$run/patgate.toml" <<TOML
[server]
listen = "127.0.0.1:$pg"
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
[[routes]]
path = "/sink/**"
upstream = "http://127.0.0.1:$sink"
rules = [{ scope = "agentpools:read" }]
TOML
pat=$("$bin" --config "$run/patgate.toml" token create --name load --owner bench --scopes agentpools:read --orgs '*' --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
auth="Basic $(printf 'x:%s' "$pat" | base64 -w0)"

# Upstream: the reference nginx (`return 200 "ok\n"`). Small GETs only: for a POST it may
# answer before reading the body, so the 1 GiB POST goes to benches/sink.py instead, which
# reads and discards the whole body before it answers (with the byte count, checked below).
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" "$shared/nginx-upstream.conf" > "$run/nginx-upstream.conf"
# The proxy: the reference config with our ports, the map key set to the exact value wrk and
# curl send, and the same location (same header check) for /sink/ to the sink upstream.
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" -e "s/127\.0\.0\.1:18082/127.0.0.1:$px/" \
    -e "s|\"Basic [^\"]*\" 1;|\"$auth\" 1;|" \
    -e "s|^\(  upstream up .*\)$|\1\n  upstream sink { server 127.0.0.1:$sink; keepalive 64; }|" \
    -e "s|^\(    location / {\)$|    location /sink/ {\n      if (\$allowed = 0) { return 401; }\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Authorization \"\";\n      proxy_pass http://sink;\n    }\n\1|" \
    "$shared/nginx-proxy.conf" > "$run/nginx-proxy.conf"
grep -qF "\"$auth\" 1;" "$run/nginx-proxy.conf" && grep -q 'proxy_pass http://sink;' "$run/nginx-proxy.conf" \
  || { echo "could not adapt nginx-proxy.conf" >&2; exit 1; }

for c in upstream proxy; do
  nginx -p "$run/" -c "$run/nginx-$c.conf" -e "$run/nginx-$c.err" -g 'daemon off;' & pids+=($!)
done
nginx_proxy=$!
python3 benches/sink.py "$sink" & pids+=($!)
"$bin" --config "$run/patgate.toml" serve & pgpid=$!; pids+=($pgpid)
# The same with one worker: one event loop, as nginx here has one worker process.
PATGATE__SERVER__WORKERS=1 PATGATE__SERVER__LISTEN="127.0.0.1:$pg1" "$bin" --config "$run/patgate.toml" serve & pg1pid=$!; pids+=($pg1pid)

declare -A url=(
  [direct]="http://127.0.0.1:$up/agents/pool"
  [nginx]="http://127.0.0.1:$px/agents/pool"
  [patgate]="http://127.0.0.1:$pg/agents/pool"
  [patgate-1w]="http://127.0.0.1:$pg1/agents/pool"
)
declare -A post_url=(
  [direct]="http://127.0.0.1:$sink/sink/upload"
  [nginx]="http://127.0.0.1:$px/sink/upload"
  [patgate]="http://127.0.0.1:$pg/sink/upload"
  [patgate-1w]="http://127.0.0.1:$pg1/sink/upload"
)
targets=(direct nginx patgate patgate-1w)
for t in "${targets[@]}"; do wait_http "${url[$t]}"; done
wait_http "http://127.0.0.1:$sink/"

# Each target: 200 with the header, and both proxies 401 without it; the sink path counts bytes.
code() { curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$@" || true; }
for t in "${targets[@]}"; do
  c=$(code -H "Authorization: $auth" "${url[$t]}")
  [[ $c == 200 ]] || { echo "$t: GET with the token answered $c, not 200" >&2; exit 1; }
  n=$(curl -s --max-time 5 -H "Authorization: $auth" --data-binary hello "${post_url[$t]}" || true)
  [[ $n == 5 ]] || { echo "$t: POST to the sink answered '$n', not 5" >&2; exit 1; }
  [[ $t == direct ]] && continue
  for u in "${url[$t]}" "${post_url[$t]}"; do
    c=$(code "$u")
    [[ $c == 401 ]] || { echo "$t: $u without the header answered $c, not 401" >&2; exit 1; }
  done
  c=$(code -H "Authorization: Basic $(printf 'x:pat_wrong' | base64 -w0)" "${url[$t]}")
  [[ $c == 401 ]] || { echo "$t: a wrong token answered $c, not 401" >&2; exit 1; }
done

# wrk's --latency distribution, converted to ms.
parse_wrk() { # file -> "rps p50_ms p99_ms non2xx errors requests"
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
       $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
       /requests in/ { n = $1 }
       /Non-2xx/ { bad = $NF } /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
       END { printf "%s %s %s %d %d %d\n", rps, p50, p99, bad, err, n }' "$1"
}
# CPU time (user + system, clock ticks) of a proxy's processes: nginx's master and worker,
# patgate's one process (all its threads).
declare -A procs=([nginx]="$nginx_proxy $(pgrep -d' ' -P "$nginx_proxy")" [patgate]=$pgpid [patgate-1w]=$pg1pid)
ticks() { # target -> "user system" ticks so far, or nothing for direct
  [[ -n ${procs[$1]:-} ]] || return 0
  local p u=0 s=0 f
  for p in ${procs[$1]}; do
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
    u=$((u + f[11])) s=$((s + f[12]))
  done
  echo "$u $s"
}
hz=$(getconf CLK_TCK)
load() { # target seconds -> wrk output file
  timeout $(($2 + 30)) wrk -t1 -c64 -d"$2"s --latency -H "Authorization: $auth" "${url[$1]}" > "$run/wrk.out"
  echo "$run/wrk.out"
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

load0=$(cut -d' ' -f1 /proc/loadavg)
echo "Warm-up: 2 s per target; then $rounds rounds x ${#targets[@]} targets x ${dur} s (wrk -t1 -c64)..." >&2
for t in "${targets[@]}"; do load "$t" 2 >/dev/null; done
declare -A rps p50 p99 cpu ucpu
for r in $(seq "$rounds"); do
  for i in "${!targets[@]}"; do # the order rotates each round
    t=${targets[$(((i + r - 1) % ${#targets[@]}))]}
    before=$(ticks "$t")
    read -r q a b bad err n < <(parse_wrk "$(load "$t" "$dur")")
    after=$(ticks "$t")
    ((bad == 0)) || { echo "$t: $bad responses were not 2xx/3xx" >&2; exit 1; }
    ((err == 0)) || echo "  ($t: $err socket errors)" >&2
    rps[$t]+="$q "; p50[$t]+="$a "; p99[$t]+="$b "
    us=- uu=-
    if [[ -n $before ]]; then
      read -r us uu < <(awk -v b="$before" -v a="$after" -v hz="$hz" -v n="$n" 'BEGIN {
        split(b, x, " "); split(a, y, " "); u = (y[1] - x[1]) / hz * 1e6 / n; s = (y[2] - x[2]) / hz * 1e6 / n
        printf "%.1f %.1f\n", u + s, u }')
    fi
    cpu[$t]+="$us "; ucpu[$t]+="$uu "
    printf '  round %d %-10s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  CPU %s us/request (user %s)\n' "$r" "$t" "$q" "$a" "$b" "$us" "$uu" >&2
  done
done
declare -A mr m50 m99 mcpu mucpu mib
for t in "${targets[@]}"; do
  mr[$t]=$(tr ' ' '\n' <<<"${rps[$t]}" | grep . | median)
  m50[$t]=$(tr ' ' '\n' <<<"${p50[$t]}" | grep . | median)
  m99[$t]=$(tr ' ' '\n' <<<"${p99[$t]}" | grep . | median)
  mcpu[$t]=$(tr ' ' '\n' <<<"${cpu[$t]}" | grep . | median)
  mucpu[$t]=$(tr ' ' '\n' <<<"${ucpu[$t]}" | grep . | median)
done

# One 1 GiB POST each, streamed from a pipe (chunked, no Expect: 100-continue wait).
gib=$((1024 * 1024 * 1024))
for t in "${targets[@]}"; do
  echo "  1 GiB POST via $t..." >&2
  res=$(head -c "$gib" /dev/zero | timeout 300 curl -sS --max-time 280 -X POST -T - \
        -H "Authorization: $auth" -H 'Transfer-Encoding: chunked' -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -o "$run/post.out" \
        -w '%{http_code} %{time_total}' "${post_url[$t]}")
  read -r c secs <<<"$res"
  got=$(cat "$run/post.out")
  [[ $c == 200 && $got == "$gib" ]] || { echo "$t: POST answered $c, upstream got '$got' bytes" >&2; exit 1; }
  mib[$t]=$(awk -v s="$secs" 'BEGIN { printf "%.0f", 1024 / s }')
done
peak=$(awk '/VmHWM/ { print $2 }' /proc/$pgpid/status)
peak1=$(awk '/VmHWM/ { print $2 }' /proc/$pg1pid/status)

echo
echo "GET ${url[patgate]#http://127.0.0.1:$pg} over keep-alive, wrk -t1 -c64, median of $rounds x ${dur} s; one 1 GiB chunked POST"
printf '%-18s %10s %10s %10s %12s %12s %10s\n' target rps "p50 ms" "p99 ms" "POST MiB/s" "CPU us/req" "user part"
for t in "${targets[@]}"; do
  printf '%-18s %10.0f %10.3f %10.3f %12s %12s %10s\n' "$t" "${mr[$t]}" "${m50[$t]}" "${m99[$t]}" "${mib[$t]}" "${mcpu[$t]}" "${mucpu[$t]}"
done
for pair in patgate/nginx patgate/direct patgate-1w/nginx; do
  p=${pair%/*} base=${pair#*/}
  awk -v n="$pair" -v r="${mr[$p]}" -v rb="${mr[$base]}" -v a="${m50[$p]}" -v ab="${m50[$base]}" \
      -v b="${m99[$p]}" -v bb="${m99[$base]}" -v m="${mib[$p]}" -v mb="${mib[$base]}" \
      -v c="${mcpu[$p]}" -v cb="${mcpu[$base]}" -v u="${mucpu[$p]}" -v ub="${mucpu[$base]}" \
      'BEGIN { cr = (cb + 0 > 0) ? sprintf("%.2f", c / cb) : "-"; ur = (ub + 0 > 0) ? sprintf("%.2f", u / ub) : "-"
               printf "%-18s %10.2f %10.2f %10.2f %12.2f %12s %10s\n", n, r / rb, a / ab, b / bb, m / mb, cr, ur }'
done
awk -v k="$peak" -v k1="$peak1" 'BEGIN { printf "patgate peak RSS: %.1f MiB (VmHWM %d KiB); with one worker %.1f MiB\n", k / 1024, k, k1 / 1024 }'
echo "load average (1 min) at the start: $load0 on $(nproc) cores; at the end: $(cut -d' ' -f1 /proc/loadavg); ${SECONDS} s after the build"
