#!/usr/bin/env bash
# Side-by-side load, in one run on one machine: patgate against nginx and HAProxy as reverse
# proxies doing the cheapest auth they can (admit exactly one Authorization value, strip it
# upstream), all with keep-alive to the upstream and no logging, each at one and two workers:
#   nginx-1w, nginx-2w      the reference ../shared/bench/nginx-proxy.conf (its `map`),
#                           worker_processes 1 and 2, plus `listen ... ssl http2`, and
#                           keepalive_requests 1000000 (below)
#   haproxy-1w, haproxy-2w  HAProxy (Debian's 2.6), nbthread 1 and 2: `http-request deny
#                           deny_status 401 unless { req.fhdr(authorization) -m str ... }`
#                           (fhdr: the whole value, commas and all, as nginx's map compares
#                           it), `del-header authorization`, `http-reuse always`
#   patgate, patgate-1w     token lookup, route, scope check; its default of one worker per
#                           core (2 here), and PATGATE__SERVER__WORKERS=1; with [server.tls]
#                           for the TLS workloads (separate instances, same store)
#   direct                  straight to the upstream, for the plain HTTP workloads
# Workloads, each ROUNDS rounds of DURATION_S seconds. A round runs every workload in turn,
# and within it every target, in an order that rotates from round to round, so that noise
# from the shared machine hits every side alike; medians are taken over the rounds.
#   get         small GET, keep-alive, 64 connections            wrk -t1 -c64
#   close       small GET, a new TCP connection for each request,
#               16 connections                                   wrk -t1 -c16 -H 'Connection: close'
#   post        4 KiB POST, keep-alive, 64 connections           wrk -t1 -c64 (a lua body)
#   h2          HTTP/2 over TLS, 16 connections x 10 streams     h2load -c16 -m10
#   tls-new     TLS 1.3, HTTP/1.1, a new connection and a full handshake for each request,
#               16 connections: wrk -t1 -c16 -H 'Connection: close' with benches/noresume.c
#               preloaded (wrk would otherwise resume the connection's last session)
#   tls-resume  the same, each new connection resuming the previous one's session (TLS 1.3
#               ticket), which is what wrk does by itself; req/s here is handshakes/s
# Upstreams: the small GETs go to the reference nginx upstream (`return 200`, one worker);
# the small POSTs to benches/sink.c (one epoll thread; reads the whole body before it
# answers with the byte count, where nginx's `return 200` may answer first; far cheaper than
# sink.py, which tops out near 20k requests/s here); then one 1 GiB chunked POST through
# each target to benches/sink.py, as before. The certificate is a self-signed ECDSA P-256 one
# made in the run folder.
# Before the load: every target answers 200 with the token and 401 without it or with a
# wrong one, on plain HTTP, HTTP/1.1 over TLS and HTTP/2; the POST upstreams get the whole
# body and no Authorization header; every TLS target resumes a session; wrk resumes without
# the preload and never with it. Under load any non-2xx answer stops the run.
# Printed per workload and target: req/s, p50 and p99 latency (ms; wrk's --latency, or
# h2load's per-request log), and the CPU time the proxy spent per request (user + system
# ticks of all its processes from /proc/PID/stat: nginx's master and workers, HAProxy's and
# patgate's one process, all threads; and the user part), medians over the rounds; then the
# ratios patgate/best peer, the best peer on each metric being the best of nginx-1w,
# nginx-2w, haproxy-1w and haproxy-2w on it (highest req/s, lowest latency and CPU). Then the
# 1 GiB POST in MiB/s, patgate's peak RSS, the load average and the date. CPU per request is
# steadier on a shared machine than req/s, which depends on what else runs, and it is the
# figure to read for the TLS workloads: there the client's own handshakes (OpenSSL 3.0 in
# wrk and h2load) take about as much CPU as the proxy's, so req/s is bound by both.
# With the defaults (5 s, 3 rounds) a run takes about 11 minutes after the build; the README's
# figures are `bash benches/load.sh 5 5` (about 18 minutes).
# Usage: bash benches/load.sh [DURATION_S] [ROUNDS]    (defaults 5 3; loopback only; installs
#        nginx-light, wrk, haproxy and nghttp2-client (h2load) if missing; needs cc)
#        WORKLOADS="get h2" runs only those (the 1 GiB POST runs whatever it says).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-5}
rounds=${2:-3}
[[ $dur =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] \
  || { echo "usage: bash benches/load.sh [DURATION_S] [ROUNDS]   (whole numbers, at least 1)" >&2; exit 2; }
shared=$PWD/../shared/bench
die() { echo "$*" >&2; exit 1; }

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "Installing ${need[*]}..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cc >/dev/null || die "needs a C compiler (cc) for benches/sink.c and benches/noresume.c"
cargo build --release --quiet
bin=$PWD/target/release/patgate
run=$(mktemp -d)
SECONDS=0
started=$(date '+%F %T %Z')
pids=()
stop() { # pid: SIGTERM, at most 5 s, then SIGKILL
  local t
  kill "$1" 2>/dev/null || true
  for t in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do stop "$p"; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -o "$run/sink" benches/sink.c
cc -O2 -shared -fPIC -o "$run/noresume.so" benches/noresume.c -ldl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$run/key.pem" -out "$run/cert.pem" 2>/dev/null
cat "$run/cert.pem" "$run/key.pem" > "$run/tls.pem" # HAProxy's crt: chain and key in one file

taken() { ss -Hltn "sport = :$1" | grep -q .; }
ports=()
port() { # variable preferred-port: a free port not yet handed out
  local p=$2
  while taken "$p" || [[ " ${ports[*]:-} " == *" $p "* ]]; do p=$((20000 + RANDOM % 30000)); done
  ports+=("$p")
  printf -v "$1" %s "$p"
}
port up 18081; port sink 18083; port csink 18086
port pg 18084; port pg1 18085; port pgt 18443; port pgt1 18444
port ng1 18091; port ng1t 18491; port ng2 18092; port ng2t 18492
port hp1 18093; port hp1t 18493; port hp2 18094; port hp2t 18494
port probe 18499

wait_http() { # url: up to 10 s for any HTTP answer
  local t
  for t in $(seq 100); do
    [[ $(curl -sk -o /dev/null --max-time 1 -w '%{http_code}' "$1" || true) != 000 ]] && return 0
    sleep 0.1
  done
  die "no answer from $1"
}

# patgate: one route for the small GETs (to the nginx upstream), one for the 1 GiB POST (to
# sink.py), one for the small POSTs (to sink.c). The TLS instances read the same file plus
# [server.tls]. rustls warns about every handshake that names an IP address in SNI, as wrk
# does (nginx and HAProxy say nothing), so its warnings are off: no proxy logs under load.
patgate_conf() { # tls(0|1) -> config on stdout
  echo '[server]'
  echo "listen = \"127.0.0.1:$pg\""
  if (($1)); then
    echo '[server.tls]'
    echo "cert_file = \"$run/cert.pem\""
    echo "key_file = \"$run/key.pem\""
  fi
  cat <<TOML
[admin]
enabled = false
[store]
url = "sqlite://$run/p.db"
[log]
level = "warn,rustls=error"
[[routes]]
path = "/agents/**"
upstream = "http://127.0.0.1:$up"
rules = [{ scope = "agentpools:read" }]
[[routes]]
path = "/sink/**"
upstream = "http://127.0.0.1:$sink"
rules = [{ scope = "agentpools:read" }]
[[routes]]
path = "/post/**"
upstream = "http://127.0.0.1:$csink"
rules = [{ scope = "agentpools:read" }]
TOML
}
patgate_conf 0 > "$run/patgate.toml"
patgate_conf 1 > "$run/patgate-tls.toml"
pat=$("$bin" --config "$run/patgate.toml" token create --name load --owner bench --scopes agentpools:read --orgs '*' --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
auth="Basic $(printf 'x:%s' "$pat" | base64 -w0)"
[[ $auth =~ ^Basic\ [A-Za-z0-9+/=]+$ ]] || die "could not make a token"

# Upstream: the reference nginx (`return 200 "ok\n"`), for the GETs only.
sed -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" "$shared/nginx-upstream.conf" > "$run/nginx-upstream.conf"
# The nginx proxies: the reference config with its worker count, our ports, a TLS listener
# (nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols), the map key set to the exact
# value wrk and curl send, and the same location (same header check) for /sink/ and /post/.
# keepalive_requests goes from 1000 to 1000000: with 1000, nginx ends every HTTP/2
# connection with GOAWAY after 1000 requests, h2load does not reconnect, and the rest of
# the run measured idle time (HAProxy and patgate set no such limit).
location() { # name: a location like the reference's `location /`, to upstream `name`
  printf '    location /%s/ {\\n      if ($allowed = 0) { return 401; }\\n      proxy_http_version 1.1;\\n      proxy_set_header Connection "";\\n      proxy_set_header Authorization "";\\n      proxy_pass http://%s;\\n    }\\n' "$1" "$1"
}
nginx_conf() { # workers port tls-port -> $run/nginx-<workers>w.conf
  local f=$run/nginx-$1w.conf
  sed -e "s/^worker_processes 1;$/worker_processes $1;/" \
      -e "s/^pid nginx-proxy\.pid;$/pid nginx-$1w.pid;/" \
      -e "s/^error_log nginx-proxy\.err warn;$/error_log nginx-$1w.err warn;/" \
      -e "s/127\.0\.0\.1:18081/127.0.0.1:$up/" \
      -e "s/^  access_log off;$/  access_log off;\n  keepalive_requests 1000000;/" \
      -e "s|^    listen 127\.0\.0\.1:18082;$|    listen 127.0.0.1:$2;\n    listen 127.0.0.1:$3 ssl http2;\n    ssl_certificate $run/cert.pem;\n    ssl_certificate_key $run/key.pem;\n    ssl_protocols TLSv1.2 TLSv1.3;|" \
      -e "s|\"Basic [^\"]*\" 1;|\"$auth\" 1;|" \
      -e "s|^\(  upstream up .*\)$|\1\n  upstream sink { server 127.0.0.1:$sink; keepalive 64; }\n  upstream post { server 127.0.0.1:$csink; keepalive 64; }|" \
      -e "s|^\(    location / {\)$|$(location sink)$(location post)\1|" \
      "$shared/nginx-proxy.conf" > "$f"
  grep -qx "worker_processes $1;" "$f" && grep -qx "pid nginx-$1w.pid;" "$f" && grep -qF "\"$auth\" 1;" "$f" \
    && grep -qx '  keepalive_requests 1000000;' "$f" && grep -qF "listen 127.0.0.1:$3 ssl http2;" "$f" && grep -q 'proxy_pass http://sink;' "$f" \
    && grep -q 'proxy_pass http://post;' "$f" && grep -q 'proxy_pass http://up;' "$f" \
    || die "could not adapt nginx-proxy.conf"
}
nginx_conf 1 "$ng1" "$ng1t"
nginx_conf 2 "$ng2" "$ng2t"
haproxy_conf() { # threads port tls-port -> $run/haproxy-<threads>w.cfg
  cat > "$run/haproxy-$1w.cfg" <<CFG
global
  nbthread $1
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 30s
frontend proxy
  bind 127.0.0.1:$2
  bind 127.0.0.1:$3 ssl crt $run/tls.pem alpn h2,http/1.1
  http-request deny deny_status 401 unless { req.fhdr(authorization) -m str "$auth" }
  http-request del-header authorization
  use_backend sink if { path_beg /sink/ }
  use_backend post if { path_beg /post/ }
  default_backend up
backend up
  server up 127.0.0.1:$up
backend sink
  server sink 127.0.0.1:$sink
backend post
  server post 127.0.0.1:$csink
CFG
  haproxy -c -q -f "$run/haproxy-$1w.cfg" || die "haproxy-$1w.cfg does not check"
}
haproxy_conf 1 "$hp1" "$hp1t"
haproxy_conf 2 "$hp2" "$hp2t"

nginx -p "$run/" -c "$run/nginx-upstream.conf" -e "$run/nginx-upstream.err" -g 'daemon off;' & pids+=($!)
python3 benches/sink.py "$sink" & pids+=($!)
"$run/sink" "$csink" & pids+=($!)
declare -A procs tprocs # target -> pids whose CPU counts, for plain HTTP and for TLS
for n in 1 2; do
  nginx -p "$run/" -c "$run/nginx-${n}w.conf" -e "$run/nginx-${n}w.err" -g 'daemon off;' & pids+=($!)
  procs[nginx-${n}w]=$!
  haproxy -db -f "$run/haproxy-${n}w.cfg" 2>"$run/haproxy-${n}w.err" & pids+=($!)
  procs[haproxy-${n}w]=$!
done
"$bin" --config "$run/patgate.toml" serve & pids+=($!); procs[patgate]=$!
# With one worker: one event loop, as nginx-1w has one worker process and haproxy-1w one thread.
PATGATE__SERVER__WORKERS=1 PATGATE__SERVER__LISTEN="127.0.0.1:$pg1" "$bin" --config "$run/patgate.toml" serve & pids+=($!); procs[patgate-1w]=$!
PATGATE__SERVER__LISTEN="127.0.0.1:$pgt" "$bin" --config "$run/patgate-tls.toml" serve & pids+=($!); tprocs[patgate]=$!
PATGATE__SERVER__WORKERS=1 PATGATE__SERVER__LISTEN="127.0.0.1:$pgt1" "$bin" --config "$run/patgate-tls.toml" serve & pids+=($!); tprocs[patgate-1w]=$!

peers=(nginx-1w nginx-2w haproxy-1w haproxy-2w)
proxies=("${peers[@]}" patgate patgate-1w)
targets=(direct "${proxies[@]}")
declare -A hport=([direct]=$up [nginx-1w]=$ng1 [nginx-2w]=$ng2 [haproxy-1w]=$hp1 [haproxy-2w]=$hp2 [patgate]=$pg [patgate-1w]=$pg1)
declare -A tport=([nginx-1w]=$ng1t [nginx-2w]=$ng2t [haproxy-1w]=$hp1t [haproxy-2w]=$hp2t [patgate]=$pgt [patgate-1w]=$pgt1)
declare -A url post_url small_url tls_url
for t in "${targets[@]}"; do
  url[$t]="http://127.0.0.1:${hport[$t]}/agents/pool"
  post_url[$t]="http://127.0.0.1:${hport[$t]}/sink/upload"
  small_url[$t]="http://127.0.0.1:${hport[$t]}/post/upload"
done
post_url[direct]="http://127.0.0.1:$sink/sink/upload"
small_url[direct]="http://127.0.0.1:$csink/post/upload"
for t in "${proxies[@]}"; do
  tls_url[$t]="https://127.0.0.1:${tport[$t]}/agents/pool"
  [[ -n ${tprocs[$t]:-} ]] || tprocs[$t]=${procs[$t]}
done
for t in "${targets[@]}"; do wait_http "${url[$t]}"; done
for t in "${proxies[@]}"; do wait_http "${tls_url[$t]}"; done
wait_http "http://127.0.0.1:$sink/"
wait_http "http://127.0.0.1:$csink/"
for n in 1 2; do # nginx: the master and its workers, now that they run
  p=${procs[nginx-${n}w]}
  procs[nginx-${n}w]="$p $(pgrep -d' ' -P "$p")"
  tprocs[nginx-${n}w]=${procs[nginx-${n}w]}
  (($(wc -w <<<"${procs[nginx-${n}w]}") == n + 1)) || die "nginx-${n}w: not one master and $n workers: ${procs[nginx-${n}w]}"
done

# Each target: 200 with the header; the proxies 401 without it and with a wrong token; the
# sinks get the whole body, and from the proxies no Authorization header.
code() { curl -sk -o /dev/null --max-time 5 -w '%{http_code}' "$@" || true; }
body() { curl -sk --max-time 5 "$@" || true; }
head -c 4096 /dev/zero | tr '\0' x > "$run/4k"
wrong="Basic $(printf 'x:pat_wrong' | base64 -w0)"
for t in "${targets[@]}"; do
  c=$(code -H "Authorization: $auth" "${url[$t]}")
  [[ $c == 200 ]] || die "$t: GET with the token answered $c, not 200"
  n=$(body -H "Authorization: $auth" --data-binary hello "${post_url[$t]}")
  [[ $n == 5 ]] || die "$t: POST to sink.py answered '$n', not 5"
  want=4096; [[ $t == direct ]] && want="4096 auth"
  n=$(body -H "Authorization: $auth" --data-binary @"$run/4k" "${small_url[$t]}")
  [[ $n == "$want" ]] || die "$t: 4 KiB POST to sink.c answered '$n', not '$want'"
  [[ $t == direct ]] && continue
  for u in "${url[$t]}" "${post_url[$t]}" "${small_url[$t]}"; do
    c=$(code "$u")
    [[ $c == 401 ]] || die "$t: $u without the header answered $c, not 401"
  done
  c=$(code -H "Authorization: $wrong" "${url[$t]}")
  [[ $c == 401 ]] || die "$t: a wrong token answered $c, not 401"
done
printf 'GET /agents/pool HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\nConnection: close\r\n\r\n' "$auth" > "$run/req"
for t in "${proxies[@]}"; do
  u=${tls_url[$t]}
  for v in --http1.1 --http2; do
    r=$(curl -sk -o /dev/null --max-time 5 -w '%{http_code} %{http_version}' "$v" -H "Authorization: $auth" "$u" || true)
    want="200 1.1"; [[ $v == --http2 ]] && want="200 2"
    [[ $r == "$want" ]] || die "$t: GET over TLS ($v) with the token answered '$r', not '$want'"
    c=$(code "$v" "$u")
    [[ $c == 401 ]] || die "$t: GET over TLS ($v) without the header answered $c, not 401"
  done
  n=$(body --http2 -H "Authorization: $auth" --data-binary @"$run/4k" "${u%/agents/pool}/post/upload")
  [[ $n == 4096 ]] || die "$t: 4 KiB POST over HTTP/2 answered '$n', not 4096"
  rm -f "$run/sess.pem"
  for s in -sess_out -sess_in; do
    timeout 10 openssl s_client -connect "127.0.0.1:${tport[$t]}" -servername localhost "$s" "$run/sess.pem" -ign_eof \
      < "$run/req" > "$run/s_client.out" 2>&1 || true
    grep -q '^HTTP/1.1 200' "$run/s_client.out" || die "$t: openssl s_client got no 200: $(head -c 300 "$run/s_client.out")"
  done
  grep -q '^Reused, TLSv1.3' "$run/s_client.out" || die "$t: a TLS 1.3 session was not resumed"
done
# wrk itself: it resumes by itself, and never with the preload (against a probe nginx that
# answers 403 to a connection that did not resume).
cat > "$run/probe.conf" <<CONF
worker_processes 1;
pid probe.pid;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$probe ssl;
    ssl_certificate $run/cert.pem;
    ssl_certificate_key $run/key.pem;
    ssl_protocols TLSv1.3;
    location / { if (\$ssl_session_reused = r) { return 200; } return 403; }
  }
}
CONF
nginx -p "$run/" -c "$run/probe.conf" -e "$run/probe.err" -g 'daemon off;' & probe_pid=$!; pids+=($probe_pid)
wait_http "https://127.0.0.1:$probe/"
wrk_probe() { # [env...] -> "requests non-2xx" in $run/probe.res
  timeout 30 env "$@" wrk -t1 -c2 -d1s -H 'Connection: close' "https://127.0.0.1:$probe/" > "$run/probe.out" \
    || die "wrk against the probe failed"
  awk '/requests in/ { n = $1 } /Non-2xx/ { bad = $NF } END { print n + 0, bad + 0 }' "$run/probe.out" > "$run/probe.res"
}
wrk_probe
read -r n bad < "$run/probe.res"
((n > 20 && bad * 10 < n)) || die "wrk did not resume TLS sessions: $bad of $n requests on new sessions"
wrk_probe LD_PRELOAD="$run/noresume.so"
read -r n bad < "$run/probe.res"
((n > 20 && bad == n)) || die "with noresume.so, wrk still resumed $((n - bad)) of $n TLS sessions"
stop "$probe_pid"
for i in "${!pids[@]}"; do [[ ${pids[$i]} != "$probe_pid" ]] || unset "pids[$i]"; done

# The workloads.
workloads=(get close post h2 tls-new tls-resume)
if [[ -n ${WORKLOADS:-} ]]; then
  read -ra workloads <<< "$WORKLOADS"
  for w in "${workloads[@]}"; do
    [[ " get close post h2 tls-new tls-resume " == *" $w "* ]] || die "WORKLOADS: no workload '$w' (get close post h2 tls-new tls-resume)"
  done
fi
declare -A title=(
  [get]="small GET, keep-alive, wrk -t1 -c64"
  [close]="small GET, a new connection for each request, wrk -t1 -c16 -H 'Connection: close'"
  [post]="4 KiB POST to sink.c, keep-alive, wrk -t1 -c64"
  [h2]="HTTP/2 over TLS, h2load -c16 -m10"
  [tls-new]="TLS 1.3, a new connection and full handshake for each request, wrk -t1 -c16 (noresume.so)"
  [tls-resume]="TLS 1.3, a new connection for each request, resuming the session, wrk -t1 -c16"
)
tls_workload() { [[ $1 == h2 || $1 == tls-* ]]; }
targets_of() { # workload -> its targets, one a line
  if tls_workload "$1"; then printf '%s\n' "${proxies[@]}"; else printf '%s\n' "${targets[@]}"; fi
}
cat > "$run/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# wrk's --latency distribution, converted to ms.
parse_wrk() { # file -> "rps p50_ms p99_ms non2xx errors requests"
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
       $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
       /requests in/ { n = $1 }
       /Non-2xx/ { bad = $NF } /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
       END { printf "%s %s %s %d %d %d\n", rps, p50, p99, bad, err, n }' "$1"
}
# h2load's summary, and the percentiles from its per-request log (microseconds, 3rd column).
parse_h2load() { # summary log -> "rps p50_ms p99_ms non2xx errors requests"
  grep -q '^Application protocol: h2$' "$1" || die "h2load did not speak h2: $(grep -i protocol "$1" || true)"
  local pct
  pct=$(cut -f3 "$2" | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) { print "0 0"; exit }
        i = int(NR * 0.5 + 0.999); j = int(NR * 0.99 + 0.999); printf "%.3f %.3f\n", a[i] / 1000, a[j] / 1000 }')
  awk -v pct="$pct" '/^finished in/ { rps = $4 }
       /^requests:/ { done = $6; failed = $10; errored = $12; tmo = $14 }
       /^status codes:/ { other = $5 + $7 + $9 }
       END { bad = failed - errored; if (other > bad) bad = other
             printf "%s %s %d %d %d\n", rps, pct, bad, errored + tmo, done }' "$1"
}
# CPU time (user + system, clock ticks) of a target's processes.
ticks() { # workload target -> "user system" ticks so far, or nothing for direct
  local ps
  if tls_workload "$1"; then ps=${tprocs[$2]:-}; else ps=${procs[$2]:-}; fi
  [[ -n $ps ]] || return 0
  local p u=0 s=0 f
  for p in $ps; do
    read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat")
    u=$((u + f[11])) s=$((s + f[12]))
  done
  echo "$u $s"
}
hz=$(getconf CLK_TCK)
load() { # workload target seconds -> "rps p50_ms p99_ms non2xx errors requests" in $run/result
  local w=$1 t=$2 s=$3 out=$run/load.out tmo=$(($3 + 30)) a=(-H "Authorization: $auth")
  case $w in
    get) timeout "$tmo" wrk -t1 -c64 -d"$s"s --latency "${a[@]}" "${url[$t]}" > "$out" ;;
    close) timeout "$tmo" wrk -t1 -c16 -d"$s"s --latency "${a[@]}" -H 'Connection: close' "${url[$t]}" > "$out" ;;
    post) timeout "$tmo" wrk -t1 -c64 -d"$s"s --latency -s "$run/post.lua" "${a[@]}" "${small_url[$t]}" > "$out" ;;
    h2)
      rm -f "$run/h2.log"
      timeout "$tmo" h2load -c16 -m10 -D "$s" --log-file="$run/h2.log" -H "authorization: $auth" "${tls_url[$t]}" > "$out" ;;
    tls-new)
      timeout "$tmo" env LD_PRELOAD="$run/noresume.so" wrk -t1 -c16 -d"$s"s --latency "${a[@]}" -H 'Connection: close' "${tls_url[$t]}" > "$out" ;;
    tls-resume) timeout "$tmo" wrk -t1 -c16 -d"$s"s --latency "${a[@]}" -H 'Connection: close' "${tls_url[$t]}" > "$out" ;;
  esac || die "$w/$t: the load tool failed (exit $?): $(tail -5 "$out")"
  if [[ $w == h2 ]]; then parse_h2load "$out" "$run/h2.log" > "$run/result"; else parse_wrk "$out" > "$run/result"; fi
}
median() { # values, one a line -> the median, or - if any is -
  sort -g | awk '{ a[NR] = $1 } $1 == "-" { dash = 1 } END { print (dash || NR == 0) ? "-" : a[int((NR + 1) / 2)] }'
}

load0=$(cut -d' ' -f1 /proc/loadavg)
nmeas=0
for w in "${workloads[@]}"; do nmeas=$((nmeas + $(targets_of "$w" | wc -l))); done
echo "Warm-up: 1 s per workload and target; then $rounds rounds x $nmeas runs x ${dur} s (about $((rounds * nmeas * dur / 60 + 1)) min)..." >&2
for w in "${workloads[@]}"; do
  while read -r t; do load "$w" "$t" 1; done < <(targets_of "$w")
done
declare -A acc # metric,workload,target -> values, one per round
for r in $(seq "$rounds"); do
  for w in "${workloads[@]}"; do
    mapfile -t ts < <(targets_of "$w")
    for i in "${!ts[@]}"; do # the order rotates each round
      t=${ts[$(((i + r - 1) % ${#ts[@]}))]}
      before=$(ticks "$w" "$t")
      load "$w" "$t" "$dur"
      after=$(ticks "$w" "$t")
      read -r q a b bad err n < "$run/result"
      ((n > 0)) || die "$w/$t: no request completed: $(tail -5 "$run/load.out")"
      ((bad == 0)) || die "$w/$t: $bad of $n responses were not 2xx"
      ((err == 0)) || echo "  ($w/$t: $err socket errors)" >&2
      us=- uu=-
      if [[ -n $before ]]; then
        read -r us uu < <(awk -v b="$before" -v a="$after" -v hz="$hz" -v n="$n" 'BEGIN {
          split(b, x, " "); split(a, y, " "); u = (y[1] - x[1]) / hz * 1e6 / n; s = (y[2] - x[2]) / hz * 1e6 / n
          printf "%.1f %.1f\n", u + s, u }')
      fi
      acc[rps,$w,$t]+="$q "; acc[p50,$w,$t]+="$a "; acc[p99,$w,$t]+="$b "
      acc[cpu,$w,$t]+="$us "; acc[ucpu,$w,$t]+="$uu "
      printf '  round %d %-10s %-10s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  CPU %6s us/request (user %s)\n' \
        "$r" "$w" "$t" "$q" "$a" "$b" "$us" "$uu" >&2
    done
  done
done
metrics=(rps p50 p99 cpu ucpu)
declare -A med
for k in "${!acc[@]}"; do med[$k]=$(tr ' ' '\n' <<<"${acc[$k]}" | grep . | median); done

# One 1 GiB POST each, streamed from a pipe (chunked, no Expect: 100-continue wait), to sink.py.
gib=$((1024 * 1024 * 1024))
declare -A mib
for t in "${targets[@]}"; do
  echo "  1 GiB POST via $t..." >&2
  res=$(head -c "$gib" /dev/zero | timeout 300 curl -sS --max-time 280 -X POST -T - \
        -H "Authorization: $auth" -H 'Transfer-Encoding: chunked' -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -o "$run/post.out" \
        -w '%{http_code} %{time_total}' "${post_url[$t]}")
  read -r c secs <<<"$res"
  got=$(cat "$run/post.out")
  [[ $c == 200 && $got == "$gib" ]] || die "$t: POST answered $c, upstream got '$got' bytes"
  mib[$t]=$(awk -v s="$secs" 'BEGIN { printf "%.0f", 1024 / s }')
done
rss() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

best() { # metric workload -> "value target": the best peer on it
  local t
  for t in "${peers[@]}"; do echo "${med[$1,$2,$t]} $t"; done \
    | if [[ $1 == rps ]]; then sort -k1,1gr; else sort -k1,1g; fi | head -1
}
fmt() { awk -v f="$1" -v v="$2" 'BEGIN { if (v == "-") print v; else printf f "\n", v }'; } # format value
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
row='%-16s %10s %9s %9s %11s %11s\n'
echo
echo "patgate vs nginx and HAProxy, median of $rounds rounds x ${dur} s; CPU: the proxy's user + system time per request"
for w in "${workloads[@]}"; do
  echo
  echo "$w: ${title[$w]}"
  # shellcheck disable=SC2059
  printf "$row" target req/s "p50 ms" "p99 ms" "CPU us/req" "user us/req"
  while read -r t; do
    # shellcheck disable=SC2059
    printf "$row" "$t" "$(fmt %.0f "${med[rps,$w,$t]}")" "$(fmt %.3f "${med[p50,$w,$t]}")" \
      "$(fmt %.3f "${med[p99,$w,$t]}")" "$(fmt %.1f "${med[cpu,$w,$t]}")" "$(fmt %.1f "${med[ucpu,$w,$t]}")"
  done < <(targets_of "$w")
  declare -A bv=() bn=()
  for m in "${metrics[@]}"; do read -r "bv[$m]" "bn[$m]" < <(best "$m" "$w"); done
  for p in patgate patgate-1w; do
    r=()
    for m in "${metrics[@]}"; do r+=("$(ratio "${med[$m,$w,$p]}" "${bv[$m]}")"); done
    # shellcheck disable=SC2059
    printf "$row" "$p/best" "${r[@]}"
  done
  echo "  best peer: req/s ${bn[rps]}, p50 ${bn[p50]}, p99 ${bn[p99]}, CPU ${bn[cpu]}, user ${bn[ucpu]}"
done
echo
echo "One 1 GiB chunked POST to sink.py, MiB/s"
bt=$(for t in "${peers[@]}"; do echo "${mib[$t]} $t"; done | sort -k1,1gr | head -1)
for t in "${targets[@]}"; do printf '%-16s %10s\n' "$t" "${mib[$t]}"; done
for p in patgate patgate-1w; do printf '%-16s %10s   (best peer %s)\n' "$p/best" "$(ratio "${mib[$p]}" "${bt% *}")" "${bt#* }"; done
echo
echo "patgate peak RSS (VmHWM): $(rss "${procs[patgate]}") MiB, with one worker $(rss "${procs[patgate-1w]}") MiB;" \
  "TLS instances $(rss "${tprocs[patgate]}") and $(rss "${tprocs[patgate-1w]}") MiB"
echo "load average (1 min) at the start: $load0 on $(nproc) cores; at the end: $(cut -d' ' -f1 /proc/loadavg)"
echo "started $started, ended $(date '+%F %T %Z'); ${SECONDS} s after the build"
