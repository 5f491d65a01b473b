"""A real Dagster deployment of this repo as child processes, driven over GraphQL.

``DagsterService(home, env)`` starts ``dagster-webserver`` and ``dagster-daemon`` for
``workspace.yaml`` with ``DAGSTER_HOME=home`` (the repo's dagster.yaml copied in, or the
``instance_yaml`` given), waits for
``/server_info`` and the code location, and offers the few GraphQL calls the end-to-end test and
``marketdata bench --bars --daemon`` need: launch a job run for a partition, launch a partition
backfill of an asset over a range (honouring its BackfillPolicy, as the UI's asset graph does),
wait for runs and backfills, list a backfill's runs, read per-partition check statuses, stop
sensors and schedules. Both processes are stopped by PID (``stop``).

Plain HTTP and subprocesses: nothing here imports dagster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..clock import hour_keys
from ..procs import default_signals

REPO = Path(__file__).resolve().parents[2]          # marketdata/bench/dagster_service.py -> the repo
LOCATION = "marketdata"
REPOSITORY = "__repository__"
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class DagsterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterService:
    def __init__(self, home: Path, env: dict | None = None, *, port: int | None = None,
                 log_dir: Path | None = None, pool_limit: int | None = 1, instance_yaml: Path | None = None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        # the instance: the repo's dagster.yaml (sqlite), or another (e.g. Postgres storage)
        shutil.copy(instance_yaml or REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.env = dict(os.environ if env is None else env)
        self.env["DAGSTER_HOME"] = str(self.home)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(log_dir or self.home / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []
        self.pool_limit = pool_limit
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(args, env=self.env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=default_signals)

    def start(self, timeout: float = 120.0) -> "DagsterService":
        bin_dir = Path(sys.executable).parent
        if self.pool_limit is not None:
            # dagster.yaml's note: set the clickhouse pool before the first queue pass
            subprocess.run([str(bin_dir / "dagster"), "instance", "concurrency", "set", "clickhouse",
                            str(self.pool_limit)], env=self.env, cwd=str(REPO), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_signals)
        self._spawn("dagster-webserver", [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml",
                                          "-h", "127.0.0.1", "-p", str(self.port)])
        self._spawn("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if self.http.get("/server_info").status_code == 200 and self.location_loaded():
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DagsterError(f"dagster-webserver not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.5)

    def daemons_healthy(self) -> bool:
        d = self.gql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
        st = d["instance"]["daemonHealth"]["allDaemonStatuses"]
        return bool(st) and all(x["healthy"] for x in st if x["required"])

    def wait_daemons(self, timeout: float = 120.0) -> None:
        """Until every required daemon (sensors, schedules, backfills, run queue, ...) has a fresh
        heartbeat: the daemon has loaded the code location and is iterating."""
        deadline = time.monotonic() + timeout
        while not self.daemons_healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise DagsterError(f"dagster-daemon not healthy after {timeout}s\n{self.log_tail()}")
            time.sleep(1.0)

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise DagsterError(f"{name} exited with {p.returncode}\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        out = []
        for name in self.procs:
            try:
                lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-n:]
            except OSError:
                lines = []
            out.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self, timeout: float = 20.0) -> None:
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)      # its own session: the code server too
                except ProcessLookupError:
                    pass
        for name, p in self.procs.items():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for f in self._logs:
            f.close()
        self.http.close()

    def __enter__(self) -> "DagsterService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- GraphQL ---------------------------------------------------------------------------

    def gql(self, query: str, variables: dict | None = None) -> dict:
        r = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise DagsterError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def location_loaded(self) -> bool:
        d = self.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name
              locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
        for e in d["workspaceOrError"].get("locationEntries", []):
            if e["name"] == LOCATION:
                t = e["locationOrLoadError"] or {}
                if t.get("__typename") == "PythonError":
                    raise DagsterError(f"code location failed to load: {t.get('message')}")
                return t.get("__typename") == "RepositoryLocation"
        return False

    def launch_run(self, job: str, *, tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
        d = self.gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
              ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
              ... on RunConfigValidationInvalid { errors { message } } ... on Error { message } } }""",
                     {"p": {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                                         "jobName": job},
                            "runConfigData": run_config or {},
                            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}})
        res = d["launchRun"]
        if res["__typename"] != "LaunchRunSuccess":
            raise DagsterError(f"launchRun: {res}")
        return res["run"]["runId"]

    def launch_asset_backfill(self, asset: str, start: str, end: str, *, title: str = "",
                              tags: dict[str, str] | None = None) -> str:
        """A partition backfill of ``asset`` over [start, end] (keys), as the asset graph launches it."""
        d = self.gql("""mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
              __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
              ... on Error { message } } }""",
                     {"p": {"partitionsByAssets": [{"assetKey": {"path": [asset]},
                                                    "partitions": {"range": {"start": start, "end": end}}}],
                            "title": title or f"{asset} {start}..{end}",
                            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}})
        res = d["launchPartitionBackfill"]
        if res["__typename"] != "LaunchBackfillSuccess":
            raise DagsterError(f"launchPartitionBackfill: {res}")
        return res["backfillId"]

    def run_status(self, run_id: str) -> str:
        d = self.gql("""query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }""",
                     {"id": run_id})
        return d["runOrError"].get("status", "")

    def backfill(self, backfill_id: str) -> dict:
        d = self.gql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
              ... on PartitionBackfill { id status numPartitions } ... on PythonError { message } } }""",
                     {"id": backfill_id})
        return d["partitionBackfillOrError"]

    def runs(self, tags: dict[str, str]) -> list[dict]:
        d = self.gql("""query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results {
              runId status creationTime startTime endTime tags { key value } } } } }""",
                     {"f": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}})
        out = []
        for r in d["runsOrError"]["results"]:
            r["tags"] = {t["key"]: t["value"] for t in r["tags"]}
            out.append(r)
        return out

    def wait_run(self, run_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            s = self.run_status(run_id)
            if s in RUN_DONE:
                return s
            self._check_alive()
            if time.monotonic() > deadline:
                raise DagsterError(f"run {run_id} still {s} after {timeout}s\n{self.log_tail()}")
            time.sleep(0.5)

    def wait_backfill(self, backfill_id: str, timeout: float = 180.0) -> dict:
        """Wait until the backfill is done and none of its runs is still going."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.backfill(backfill_id)
            runs = self.runs({"dagster/backfill": backfill_id})
            if b.get("status") in BACKFILL_DONE and all(r["status"] in RUN_DONE for r in runs):
                b["runs"] = runs
                return b
            self._check_alive()
            if time.monotonic() > deadline:
                raise DagsterError(f"backfill {backfill_id} still {b.get('status')} after {timeout}s "
                                   f"({[r['status'] for r in runs]})\n{self.log_tail()}")
            time.sleep(0.5)

    def check_partition_statuses(self, asset: str, check: str) -> dict[str, str]:
        """{partition key: SUCCEEDED | FAILED | IN_PROGRESS | SKIPPED | EXECUTION_FAILED} for the
        partitions the check has a status for."""
        d = self.gql("""query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { assetChecksOrError {
              ... on AssetChecks { checks { name partitionStatuses {
                ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } } } } }""",
                     {"k": [{"path": [asset]}]})
        out: dict[str, str] = {}
        for node in d["assetNodes"]:
            for c in (node["assetChecksOrError"] or {}).get("checks", []):
                if c["name"] != check or not c.get("partitionStatuses"):
                    continue
                for r in c["partitionStatuses"].get("ranges", []):
                    out.update({k: r["status"] for k in hour_keys(r["startKey"], r["endKey"])})
        return out

    def set_automation(self, running: bool) -> list[str]:
        """Start or stop every sensor and schedule of the location; returns their names."""
        d = self.gql("""query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) {
              ... on Repository { sensors { name sensorState { id status selectorId } }
                                  schedules { name scheduleState { id status selectorId } } } } }""",
                     {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}})
        repo = d["repositoryOrError"]
        names = []
        for s in repo.get("sensors", []):
            st = s["sensorState"]
            if (st["status"] == "RUNNING") != running:
                if running:
                    self.gql("""mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }""",
                             {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                                    "sensorName": s["name"]}})
                else:
                    self.gql("""mutation($id: String!, $sel: String!) { stopSensor(id: $id, jobSelectorId: $sel) {
                                  __typename } }""", {"id": st["id"], "sel": st["selectorId"]})
            names.append(s["name"])
        for s in repo.get("schedules", []):
            st = s["scheduleState"]
            if (st["status"] == "RUNNING") != running:
                if running:
                    self.gql("""mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename } }""",
                             {"s": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                                    "scheduleName": s["name"]}})
                else:
                    self.gql("""mutation($id: String!) { stopRunningSchedule(id: $id) { __typename } }""",
                             {"id": st["id"]})
            names.append(s["name"])
        return names

