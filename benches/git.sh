#!/usr/bin/env bash
# Side-by-side, in one run: `git clone` and `git push` through patgate (built-in git
# upstream) and straight to the repository (file://: the same pack protocol without HTTP,
# tokens or patgate). Prints the median of RUNS clones each, one push of PUSH_MIB each,
# and patgate's peak RSS. Usage: bash benches/git.sh [SIZE_MIB] [RUNS] [PUSH_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-64}
runs=${2:-7}
push_mib=${3:-1024}
cargo build --release --quiet
bin=$PWD/target/release/patgate
work=$(mktemp -d)
trap 'kill ${pid:-0} 2>/dev/null || true; rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0
mkdir -p "$work/repos/acme"
git init -q --bare -b main "$work/repos/acme/bench.git"
git init -q -b main "$work/seed"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/seed/blob.bin"
seq 1 20000 > "$work/seed/lines.txt"
git -C "$work/seed" add . && git -C "$work/seed" -c user.name=b -c user.email=b@b commit -q -m seed
git -C "$work/seed" push -q "$work/repos/acme/bench.git" main

port=$((20000 + RANDOM % 20000))
cat > "$work/patgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[store]
url = "sqlite://$work/patgate.db"
[log]
level = "warn"
[[routes]]
path = "/{org}/{repo}/**"
upstream = "git-http-backend:$work/repos"
rules = "git"
TOML
"$bin" --config "$work/patgate.toml" serve & pid=$!
token=$("$bin" --config "$work/patgate.toml" token create --name bench --owner bench --scopes code:read --orgs acme --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
sleep 1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_clone() { # url
  local t0 t1
  rm -rf "$work/clone"
  t0=$(date +%s%N); git clone -q "$1" "$work/clone"; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
direct=(); proxied=()
for _ in $(seq "$runs"); do
  direct+=("$(time_clone "file://$work/repos/acme/bench.git")")
  proxied+=("$(time_clone "http://x:$token@127.0.0.1:$port/acme/bench.git")")
done
d=$(printf '%s\n' "${direct[@]}" | median)
p=$(printf '%s\n' "${proxied[@]}" | median)
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)

echo "Preparing a ${push_mib} MiB commit to push..." >&2
git init -q -b main "$work/big"
head -c $((push_mib * 1024 * 1024)) /dev/urandom > "$work/big/big.bin"
git -C "$work/big" -c core.compression=0 add big.bin
git -C "$work/big" -c user.name=b -c user.email=b@b commit -q -m big
for target in direct proxied; do
  git init -q --bare -b main "$work/repos/acme/push-$target.git"
done
time_push() { # url
  local t0 t1
  t0=$(date +%s%N); git -C "$work/big" -c pack.compression=0 -c http.postBuffer=1048576 push -q "$1" main; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
write=$("$bin" --config "$work/patgate.toml" token create --name bench-push --owner bench --scopes code:write --orgs acme --expires-in 1h --json | sed -E 's/.*"token":"([^"]+)".*/\1/')
sleep 0.5
pd=$(time_push "file://$work/repos/acme/push-direct.git")
pp=$(time_push "http://x:$write@127.0.0.1:$port/acme/push-proxied.git")
peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)

echo "clone of ${size_mib} MiB random blob + 20000-line text file; ${runs} clones each, interleaved"
echo "  direct (file://):         median ${d} ms"
echo "  through patgate (http):   median ${p} ms"
awk -v d="$d" -v p="$p" 'BEGIN { printf "  patgate / direct:         %.2f\n", p / d }'
echo "push of ${push_mib} MiB (one commit, uncompressed pack)"
echo "  direct (file://):         ${pd} ms"
echo "  through patgate (http):   ${pp} ms"
awk -v d="$pd" -v p="$pp" -v m="$push_mib" 'BEGIN { printf "  patgate / direct:         %.2f (%.0f MiB/s through patgate)\n", p / d, m / (p / 1000) }'
echo "patgate RSS: ${rss_before} KiB after the clones, peak ${peak} KiB over the whole run"
