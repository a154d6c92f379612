"""Cross-checks of patgate's deploy files, for deploy/check.sh (run from the repository root).

  check_manifests.py context DIR   lay out the Docker build context in DIR, as docker would
  check_manifests.py all BIN       cross-check compose, Kubernetes, the Dockerfile and the
                                   systemd files, and run `BIN check-config` on every config
                                   with the environment it gets
  check_manifests.py probes PORT   run the compose healthcheck and the Kubernetes probes
                                   against a patgate whose admin API listens on PORT

The schema checks (Compose Specification, Kubernetes OpenAPI) are check.sh's; these are the
facts no schema knows: names that must match across files, ports that must agree with the
config, and configs that patgate itself must accept.
"""

import base64
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import urllib.request

import yaml

DEPLOY = "deploy"
errors = []


def check(cond, what):
    if not cond:
        errors.append(what)
    return cond


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def host_of(listen):
    return listen.rsplit(":", 1)[0]


def git_dirs(cfg):
    return [
        r["upstream"].removeprefix("git-http-backend:")
        for r in cfg.get("routes", [])
        if r["upstream"].startswith("git-http-backend:")
    ]


def check_config(binary, text, env, label, cwd=None):
    """`patgate check-config` on a config text with extra environment; True if it passes."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "patgate.toml")
        with open(path, "w") as f:
            f.write(text)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PATGATE")}
        clean.update(env)
        r = subprocess.run(
            [binary, "--config", path, "check-config"],
            env=clean,
            cwd=cwd or d,
            capture_output=True,
            text=True,
        )
    shown = ", ".join(sorted(env)) or "no PATGATE__ variables"
    if check(r.returncode == 0, f"{label}: patgate check-config refused it ({shown}): {r.stderr.strip() or r.stdout.strip()}"):
        print(f"ok: patgate check-config: {label} (with {shown})")
        return True
    return False


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_stages(path):
    """[(name, [(instruction, args)])] with continuation lines joined."""
    stages, logical, buf = [], [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append((buf + line).strip())
        buf = ""
    for line in logical:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        check(
            instr
            in "ARG FROM RUN COPY ADD ENV WORKDIR USER EXPOSE VOLUME ENTRYPOINT CMD LABEL HEALTHCHECK SHELL STOPSIGNAL ONBUILD".split(),
            f"Dockerfile: unknown instruction {instr}",
        )
        if instr == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", args, re.I)
            stages.append((m.group(1) if m else None, []))
        elif stages:
            stages[-1][1].append((instr, args.strip()))
        else:
            check(instr == "ARG", f"Dockerfile: {instr} before the first FROM")
    return stages


def dockerignore_allows(patterns, rel):
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    allowed = True
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        parts = rel.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts)))
        if hit:
            allowed = neg
    return allowed


def read_dockerignore():
    path = os.path.join(DEPLOY, "Dockerfile.dockerignore")
    return [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]


def copy_sources(stages):
    """The build-context paths that COPY instructions (without --from) read."""
    out = []
    for _, instrs in stages:
        for instr, args in instrs:
            if instr in ("COPY", "ADD"):
                words = [w for w in args.split() if not w.startswith("--")]
                if "--from=" in args:
                    continue
                out.extend(w.rstrip("/") for w in words[:-1])
    return out


def make_context(dest):
    stages = dockerfile_stages(os.path.join(DEPLOY, "Dockerfile"))
    patterns = read_dockerignore()
    os.makedirs(dest)
    for src in copy_sources(stages):
        check(os.path.exists(src), f"Dockerfile: COPY {src}: no such file in the repository")
        check(dockerignore_allows(patterns, src), f"Dockerfile: COPY {src}: excluded by Dockerfile.dockerignore")
        if not os.path.exists(src):
            continue
        if os.path.isdir(src):
            for dirpath, _, files in os.walk(src):
                for name in files:
                    rel = os.path.join(dirpath, name)
                    if dockerignore_allows(patterns, rel):
                        os.makedirs(os.path.join(dest, dirpath), exist_ok=True)
                        shutil.copy2(rel, os.path.join(dest, rel))
        else:
            os.makedirs(os.path.join(dest, os.path.dirname(src)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, src))


def check_dockerfile():
    stages = dockerfile_stages(os.path.join(DEPLOY, "Dockerfile"))
    check(len(stages) >= 2, "Dockerfile: not multi-stage")
    final = dict()
    for instr, args in stages[-1][1]:
        final.setdefault(instr, []).append(args)
    user = final.get("USER", ["root"])[-1].split(":")[0]
    check(user.isdigit() and int(user) != 0, f"Dockerfile: the final stage runs as {user!r}, not a numeric non-root user")
    check(any("git" in a.split() for a in final.get("RUN", [])), "Dockerfile: the runtime stage does not install git")
    copies = [a for a in final.get("COPY", []) if "--from=" not in a]
    config_dest = None
    for a in copies:
        src, dest = a.split()[-2:]
        if dest == "/etc/patgate/patgate.toml":
            config_dest = src
    check(config_dest == "deploy/container.toml", "Dockerfile: deploy/container.toml is not copied to /etc/patgate/patgate.toml")
    env = " ".join(final.get("ENV", []))
    check("PATGATE_CONFIG=/etc/patgate/patgate.toml" in env, "Dockerfile: PATGATE_CONFIG does not name /etc/patgate/patgate.toml")
    cfg = tomllib.load(open(os.path.join(DEPLOY, "container.toml"), "rb"))
    exposed = {int(p.split("/")[0]) for a in final.get("EXPOSE", []) for p in a.split()}
    want = {port_of(cfg["server"]["listen"]), port_of(cfg["admin"]["listen"])}
    check(exposed == want, f"Dockerfile: EXPOSE {sorted(exposed)} but container.toml listens on {sorted(want)}")
    for listen in (cfg["server"]["listen"], cfg["admin"]["listen"]):
        check(host_of(listen) == "0.0.0.0", f"container.toml: {listen} is not reachable from outside the container")
    entry = " ".join(final.get("ENTRYPOINT", []))
    check("tini" in entry and "/usr/local/bin/patgate" in entry, "Dockerfile: ENTRYPOINT is not tini running patgate")
    print(f"ok: Dockerfile: {len(stages)} stages, runs as uid {user}, git installed, EXPOSE {sorted(exposed)} = container.toml's listeners")
    return user, cfg


# --- systemd ----------------------------------------------------------------------------


def check_systemd(binary):
    unit = {}
    for line in open(os.path.join(DEPLOY, "patgate.service")):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            unit.setdefault(k, []).append(v)
    exec_start = unit["ExecStart"][0].split()
    check(exec_start[:3] == ["/usr/local/bin/patgate", "--config", "/etc/patgate/patgate.toml"], f"patgate.service: ExecStart= {exec_start}")
    check(exec_start[-1] == "serve", "patgate.service: ExecStart= does not serve")
    sysusers = [l.split() for l in open(os.path.join(DEPLOY, "patgate.sysusers")) if l.strip() and not l.startswith("#")]
    check(any(u[0] == "u" and u[1] == unit["User"][0] for u in sysusers), "patgate.sysusers does not create the unit's User=")
    state = "/var/lib/" + unit["StateDirectory"][0]
    check(unit["WorkingDirectory"][0] == state, "patgate.service: WorkingDirectory= is not the state directory")
    check(state in unit["ReadWritePaths"][0].split(), "patgate.service: ReadWritePaths= lacks the state directory")
    for key, want in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
    }.items():
        check(unit.get(key) == [want], f"patgate.service: {key}={want} is missing")
    check("@system-service" in unit.get("SystemCallFilter", []), "patgate.service: SystemCallFilter=@system-service is missing")
    check("AF_UNIX" in unit["RestrictAddressFamilies"][0], "patgate.service: git http-backend's pipes and PostgreSQL's socket need AF_UNIX")
    text = open(os.path.join(DEPLOY, "patgate.toml")).read()
    cfg = tomllib.loads(text)
    store = cfg["store"]["url"].removeprefix("sqlite://")
    writable = [store] + git_dirs(cfg)
    for path in writable:
        check(path.startswith(state + "/"), f"deploy/patgate.toml: {path} is outside {state}, which ProtectSystem=strict leaves read-only")
    check(host_of(cfg["admin"]["listen"]) in ("127.0.0.1", "[::1]"), "deploy/patgate.toml: the admin API should stay on loopback")
    print(f"ok: patgate.service: user {unit['User'][0]}, state {state}, and deploy/patgate.toml writes only there")
    check_config(binary, text, {}, "deploy/patgate.toml (the systemd unit's config)")
    # The unit's optional EnvironmentFile= may switch to PostgreSQL.
    check_config(
        binary,
        text,
        {"PATGATE__STORE__URL": "postgres://patgate:secret@db.internal:5432/patgate"},
        "deploy/patgate.toml with PostgreSQL",
    )


# --- compose ----------------------------------------------------------------------------

INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value):
    """Compose's ${VAR:-default}, with the defaults (and no variable from this shell)."""
    if not isinstance(value, str):
        return value
    missing = [m.group(1) for m in INTERP.finditer(value) if m.group(2) is None]
    check(not missing, f"compose.yaml: {missing} have no default: `docker compose config` fails unless they are set")
    return INTERP.sub(lambda m: m.group(2) or "", value)


def env_dict(env):
    if isinstance(env, list):
        return dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def check_compose(binary, image_user, image_cfg):
    doc = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    services = doc.get("services", {})
    check({"patgate", "postgres"} <= set(services), f"compose.yaml: services {sorted(services)} lack patgate or postgres")
    p, pg = services["patgate"], services["postgres"]
    build = p.get("build", {})
    context = os.path.normpath(os.path.join(DEPLOY, build.get("context", ".")))
    check(context == ".", f"compose.yaml: build context {context} is not the repository root")
    check(os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile"))), "compose.yaml: build.dockerfile does not exist")
    env = {k: interpolate(v) for k, v in env_dict(p.get("environment")).items()}
    url = urllib.parse.urlsplit(env.get("PATGATE__STORE__URL", ""))
    check(url.scheme in ("postgres", "postgresql"), "compose.yaml: PATGATE__STORE__URL is not a PostgreSQL URL")
    pgenv = {k: interpolate(v) for k, v in env_dict(pg.get("environment")).items()}
    check(url.hostname in services, f"compose.yaml: the store URL's host {url.hostname} is not a service")
    check(url.username == pgenv.get("POSTGRES_USER"), "compose.yaml: the store URL's user is not POSTGRES_USER")
    check(url.password == pgenv.get("POSTGRES_PASSWORD"), "compose.yaml: the store URL's password is not POSTGRES_PASSWORD")
    check(url.path.lstrip("/") == pgenv.get("POSTGRES_DB"), "compose.yaml: the store URL's database is not POSTGRES_DB")
    check(
        p.get("depends_on", {}).get(url.hostname, {}).get("condition") == "service_healthy" and "healthcheck" in pg,
        "compose.yaml: patgate does not wait for a healthy PostgreSQL",
    )
    admin_port, proxy_port = port_of(image_cfg["admin"]["listen"]), port_of(image_cfg["server"]["listen"])
    published = {}
    for spec in p.get("ports", []):
        parts = str(spec).split(":")
        published[int(parts[-1])] = parts[0] if len(parts) == 3 else "0.0.0.0"
    check(set(published) == {admin_port, proxy_port}, f"compose.yaml: publishes {sorted(published)}, the image listens on {proxy_port} and {admin_port}")
    check(published.get(admin_port) == "127.0.0.1", "compose.yaml: the admin API is published beyond the host's loopback")
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in p.get("volumes", [])}
    for d in git_dirs(image_cfg):
        check(d in mounts, f"compose.yaml: the repositories {d} are not on a volume")
    for src in mounts.values():
        if not src.startswith((".", "/")):
            check(src in (doc.get("volumes") or {}), f"compose.yaml: volume {src} is not declared")
    check(str(p.get("user", "")).split(":")[0] == image_user, "compose.yaml: user differs from the image's USER")
    check(p.get("read_only") is True and "ALL" in p.get("cap_drop", []), "compose.yaml: patgate is not read-only with every capability dropped")
    print("ok: compose.yaml: store URL matches the postgres service, ports match the image's config, repositories on a volume")
    text = open(os.path.join(DEPLOY, "container.toml")).read()
    patgate_env = {k: v for k, v in env.items() if k.startswith("PATGATE__")}
    check_config(binary, text, {}, "deploy/container.toml (the image's config)")
    check_config(binary, text, patgate_env, "deploy/container.toml under compose.yaml's environment")


# --- Kubernetes -------------------------------------------------------------------------


def check_k8s(binary, image_user):
    d = os.path.join(DEPLOY, "k8s")
    files = sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    docs = {}
    for f in files:
        for doc in yaml.safe_load_all(open(os.path.join(d, f))):
            if doc:
                docs.setdefault(doc["kind"], []).append((f, doc))
    kust = docs.get("Kustomization", [(None, {})])[0][1]
    listed = set(kust.get("resources", []))
    others = {f for f in files if f != "kustomization.yaml"}
    check(listed == others, f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(others)}")
    byname = {(k, doc["metadata"]["name"]): doc for k, v in docs.items() for _, doc in v if k != "Kustomization"}
    (_, dep), = docs["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items()), "Deployment: selector does not match the pod's labels")
    spec = pod["spec"]
    (c,) = spec["containers"]
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and str(psc.get("runAsUser")) == image_user, "Deployment: not runAsNonRoot as the image's user")
    check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True, "Deployment: privilege escalation or a writable root")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "Deployment: capabilities not all dropped")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    # The config: the ConfigMap mounted where --config points.
    args = c.get("args", [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else "/etc/patgate/patgate.toml"
    cfg_dir, cfg_key = os.path.split(cfg_path)
    vol = mounts.get(cfg_dir, {})
    cm = byname.get(("ConfigMap", vol.get("configMap", {}).get("name")))
    check(cm is not None and cfg_key in cm["data"], f"Deployment: {cfg_path} is not a key of a ConfigMap in deploy/k8s")
    text = cm["data"][cfg_key]
    cfg = tomllib.loads(text)
    check(ports.get("http") == port_of(cfg["server"]["listen"]), "Deployment: port http is not server.listen's port")
    check(ports.get("admin") == port_of(cfg["admin"]["listen"]), "Deployment: port admin is not admin.listen's port")
    check(host_of(cfg["admin"]["listen"]) == "0.0.0.0", "ConfigMap: admin.listen must be 0.0.0.0 for the kubelet's probes")
    check(cfg.get("admin", {}).get("enabled", True), "ConfigMap: the admin API (and so the probes) is disabled")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("admin", ports.get("admin")), f"Deployment: {probe} is not GET {path} on the admin port")
    for dd in git_dirs(cfg):
        v = mounts.get(dd, {})
        check("persistentVolumeClaim" in v, f"Deployment: the repositories {dd} are not on a PersistentVolumeClaim")
        if "persistentVolumeClaim" in v:
            check(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in byname, "Deployment: its PVC is not in deploy/k8s")
    # The Secret: PATGATE__STORE__URL, through envFrom or env.
    env = {}
    for ef in c.get("envFrom", []):
        name = ef.get("secretRef", {}).get("name")
        secret = byname.get(("Secret", name))
        check(secret is not None, f"Deployment: envFrom Secret {name} is not in deploy/k8s")
        if secret:
            env.update(secret.get("stringData", {}))
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    check(env.get("PATGATE__STORE__URL", "").startswith(("postgres://", "postgresql://")), "Deployment: PATGATE__STORE__URL does not come from the Secret")
    (_, svc), = docs["Service"]
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service: selector does not match the pod's labels")
    for p in svc["spec"]["ports"]:
        t = p.get("targetPort", p["port"])
        check(t in ports or t in ports.values(), f"Service: targetPort {t} is not a container port")
    print(f"ok: k8s: {len(files)} files; ConfigMap, Secret, PVC, Service and probes all line up with the Deployment")
    check_config(binary, text, {k: v for k, v in env.items() if k.startswith("PATGATE__")}, "the ConfigMap's patgate.toml under the Secret's environment")
    return c, ports


def probes(port):
    """Runs the compose healthcheck and the Deployment's probes against 127.0.0.1:PORT."""
    doc = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    test = doc["services"]["patgate"]["healthcheck"]["test"]
    check(test[0] == "CMD", "compose.yaml: healthcheck is not CMD [...]")
    image_cfg = tomllib.load(open(os.path.join(DEPLOY, "container.toml"), "rb"))
    image_admin = port_of(image_cfg["admin"]["listen"])
    cmd = [a.replace(f"127.0.0.1/{image_admin}", f"127.0.0.1/{port}") for a in test[1:]]
    check(cmd != test[1:], "compose.yaml: healthcheck does not address the admin port")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    check(r.returncode == 0, f"compose.yaml: the healthcheck failed against a ready patgate: {r.stderr.strip()}")
    k8s = os.path.join(DEPLOY, "k8s")
    deployments = [
        doc for f in sorted(os.listdir(k8s)) if f.endswith(".yaml") for doc in yaml.safe_load_all(open(os.path.join(k8s, f))) if doc and doc["kind"] == "Deployment"
    ]
    dep = deployments[0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c.get(probe, {}).get("httpGet")
        if not get:
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=5) as res:
            # The kubelet counts 200..399 as success.
            check(200 <= res.status < 400, f"Deployment: {probe} GET {get['path']} answered {res.status}")
    print(f"ok: compose healthcheck and the Deployment's probes answered by patgate's admin API")


def main():
    cmd = sys.argv[1]
    if cmd == "context":
        make_context(sys.argv[2])
    elif cmd == "all":
        binary = sys.argv[2]
        user, image_cfg = check_dockerfile()
        check_systemd(binary)
        check_compose(binary, user, image_cfg)
        check_k8s(binary, user)
    elif cmd == "probes":
        probes(int(sys.argv[2]))
    else:
        sys.exit(f"unknown command {cmd}")
    if errors:
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
