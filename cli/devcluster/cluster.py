"""A simulated GPU cluster on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

The control plane is the real thing (the same binaries a cluster runs, built from source by
scripts/build-kube.sh); only the nodes are fake: kwok registers them, keeps their leases fresh and plays the
kubelet's part for pods (see `stages.py`). Everything binds 127.0.0.1 on free ports picked per start and lives
under one state directory, so several clusters (one per test session, one per developer) never collide.

The processes are started detached and recorded in `<state_dir>/state.json`, so `up` and `down` may run in
different processes (the CLI) or the same one (the pytest fixture). `down` stops exactly the recorded processes
and wipes the cluster's data; certificates are kept for the next `up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

from cli.devcluster.binaries import Binaries, find_binaries
from cli.devcluster.errors import (ClusterNotRunning, ComponentExited, ComponentStalled, DevClusterError,
                                  StartAttemptFailed)
from cli.devcluster.nodes import NodePool, node_manifest
from cli.devcluster.pki import Pki, ensure_pki
from cli.devcluster.stages import NODE_NOT_READY_LABEL, RUNTIME_LOG, kwok_config

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_MANAGED_VALUE = "fake"
# Short failure detection so "node goes NotReady" plays out in seconds, not the production 40-50 s.
NODE_LEASE_SECONDS = 20
NODE_MONITOR_GRACE = "20s"
# Start order; stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
START_ATTEMPTS = 3


_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def _free_port(taken: set[int]) -> int:
    """A loopback port nobody holds now, outside the kernel's ephemeral range, and not already in `taken`.

    Why not bind(0): it hands out a port of the ephemeral range, the same range every outgoing connect() on the
    machine draws its source port from. The child binds the port a moment later, and on a busy machine (the test
    suite's own clients, an API server talking to etcd) a connection can take it in between. Ports below the
    range are only ever taken by an explicit bind, so that window is closed.
    """
    low, high = _ephemeral_range()
    pool = range(10000, low) if low - 10000 >= 2000 else range(high + 1, 65536)
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.choice(pool)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise DevClusterError(f"no free loopback port in {pool.start}-{pool.stop - 1} after 500 tries")


@dataclass
class ClusterState:
    """What `up` started; persisted so another process can stop it or add nodes."""

    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    kwok_port: int
    bin_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    pools: dict[str, dict] = field(default_factory=dict)
    node_names: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


def _pid_alive(pid: int, binary: str) -> bool:
    """True if `pid` is running and is our binary (pids are recycled; never signal a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return cmdline == binary and state != "Z"


class DevCluster:
    """One simulated cluster rooted at `state_dir`.

    >>> c = DevCluster(Path("/tmp/dc")); c.up(gpu_nodes=2, gpus_per_node=8, instance_type="nvidia-l4")
    >>> c.kubeconfig  # Path to an admin kubeconfig
    >>> c.add_node(); c.remove_node(); c.down()
    """

    def __init__(self, state_dir: Path | str, *, binaries: Binaries | None = None) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self._binaries = binaries
        # Children started by this process, by pid: their exit status says how a component that died ended.
        self._children: dict[int, subprocess.Popen] = {}

    # --- paths -------------------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki(self) -> Pki:
        return ensure_pki(self.state_dir / "pki")

    # --- state -------------------------------------------------------------------------------------------
    def _load_state(self) -> ClusterState | None:
        try:
            return ClusterState(**json.loads(self._state_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise DevClusterError(f"unreadable cluster state {self._state_file}: {exc}") from exc

    def _save_state(self, state: ClusterState) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self._state_file)

    def _require_state(self) -> ClusterState:
        state = self._load_state()
        if state is None or not self.is_running():
            raise ClusterNotRunning(f"no running cluster in {self.state_dir}; run `endpointctl dev cluster up`")
        return state

    def is_running(self) -> bool:
        state = self._load_state()
        if state is None:
            return False
        return all(_pid_alive(state.pids.get(c, -1), str(Path(state.bin_dir) / c)) for c in COMPONENTS)

    # --- lifecycle ---------------------------------------------------------------------------------------
    def up(self, *, gpu_nodes: int = 2, gpus_per_node: int = 8, instance_type: str = "nvidia-l4",
           gpu_product: str | None = None, cpu_nodes: int = 1, build: bool = True, timeout: float = 120.0,
           audit: bool = False) -> None:
        """Start the cluster (no-op if it already runs) and register the node pools.

        `audit=True` makes the API server write one audit record per request to `audit_log` (who, verb,
        resource), which is how bench/k8s_scale.py counts the requests each client sends.
        """
        if gpu_nodes < 0 or gpus_per_node < 1 or cpu_nodes < 0:
            raise DevClusterError("gpu_nodes and cpu_nodes must be >= 0 and gpus_per_node >= 1")
        if self.is_running():
            return
        bins = self._binaries or find_binaries(build=build)
        # Ports are picked free but bound later by the children; on a shared machine another process can take
        # one in between, and a loaded machine can stall a component's start. A component that dies or does not
        # become healthy in its attempt's budget costs one attempt: everything is stopped and started again from
        # clean data on fresh ports. Each attempt has the whole `timeout`, so a slow first try cannot leave the
        # retry a budget of zero (which used to surface as a misleading "etcd not healthy").
        failures: list[str] = []
        for attempt in range(1, START_ATTEMPTS + 1):
            self.down()  # leftovers of a crashed run: stop what still runs, start from clean data
            deadline = time.monotonic() + timeout
            try:
                self._start_all(bins, deadline=deadline, gpu_nodes=gpu_nodes, gpus_per_node=gpus_per_node,
                                instance_type=instance_type, gpu_product=gpu_product, cpu_nodes=cpu_nodes, audit=audit)
                return
            except StartAttemptFailed as exc:
                failures.append(f"attempt {attempt}: {exc}\n({_machine_context(self.state_dir)})")
                self.down()
            except BaseException:
                self.down()
                raise
        raise DevClusterError(f"the cluster did not start in {START_ATTEMPTS} attempts of {timeout:.0f}s each; "
                              f"logs in {self.log_dir}\n" + "\n".join(failures))

    def _start_all(self, bins: Binaries, *, deadline: float, gpu_nodes: int, gpus_per_node: int, instance_type: str,
                   gpu_product: str | None, cpu_nodes: int, audit: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        pki = self.pki
        taken: set[int] = set()
        state = ClusterState(etcd_port=_free_port(taken), etcd_peer_port=_free_port(taken),
                             apiserver_port=_free_port(taken), kwok_port=_free_port(taken), bin_dir=str(bins.bin_dir))
        state.pools = {
            "gpu": asdict(NodePool(name="gpu", instance_type=instance_type, gpus=gpus_per_node,
                                   gpu_product=gpu_product)),
            "cpu": asdict(NodePool(name="cpu", instance_type="cpu-standard", gpus=0)),
        }
        self._write_kubeconfig(state, pki)
        runtime_log = self.state_dir / "runtime.log"
        runtime_log.write_text(RUNTIME_LOG)
        (self.state_dir / "kwok.yaml").write_text(kwok_config(bins.kwok_stage_dir, runtime_log))
        self._save_state(state)
        self._start(state, "etcd", self._etcd_args(state))
        self._wait_http(f"http://127.0.0.1:{state.etcd_port}/health", deadline, "etcd")
        self._start(state, "kube-apiserver", self._apiserver_args(state, pki) + self._audit_args(audit))
        self._wait_http(f"{state.server}/readyz", deadline, "kube-apiserver")
        self._start(state, "kube-controller-manager", self._controller_manager_args(pki))
        self._start(state, "kube-scheduler", self._scheduler_args())
        self._start(state, "kwok", self._kwok_args(state, pki))
        for _ in range(cpu_nodes):
            self.add_node(pool="cpu", _state=state)
        for _ in range(gpu_nodes):
            self.add_node(pool="gpu", _state=state)
        self._wait_ready(state, deadline)

    def down(self) -> None:
        """Stop every recorded process (TERM, then KILL after 10 s) and wipe the cluster data."""
        state = self._load_state()
        if state is not None:
            for comp in reversed(COMPONENTS):
                pid = state.pids.get(comp)
                if pid is not None:
                    _stop_pid(pid, str(Path(state.bin_dir) / comp))
                    self._children.pop(pid, None)
            self._state_file.unlink(missing_ok=True)
        shutil.rmtree(self._data_dir, ignore_errors=True)

    # --- nodes -------------------------------------------------------------------------------------------
    def add_node(self, *, pool: str = "gpu", gpus: int | None = None, instance_type: str | None = None,
                 gpu_product: str | None = None, name: str | None = None, _state: ClusterState | None = None) -> str:
        """Register one more kwok node in `pool` (overrides make a new pool-like node); returns its name."""
        state = _state or self._require_state()
        if pool not in state.pools:
            raise DevClusterError(f"unknown node pool {pool!r}; pools: {', '.join(sorted(state.pools))}")
        base = NodePool(**state.pools[pool])
        spec = NodePool(name=pool, instance_type=instance_type or base.instance_type,
                        gpus=base.gpus if gpus is None else gpus,
                        gpu_product=gpu_product or (base.gpu_product if instance_type is None else None))
        if name is None:
            n = 0
            while (name := f"kwok-{pool}-{n}") in state.node_names:
                n += 1
        manifest = node_manifest(name, spec, kwok_annotation=(KWOK_NODE_ANNOTATION, KWOK_MANAGED_VALUE))
        self._kubectl_like("POST", "/api/v1/nodes", state, manifest)
        state.node_names.append(name)
        self._save_state(state)
        return name

    def remove_node(self, name: str | None = None) -> str:
        """Delete a node (default: the newest GPU node); its pods are garbage-collected and rescheduled."""
        state = self._require_state()
        if name is None:
            gpu = [n for n in state.node_names if n.startswith("kwok-gpu-")]
            if not gpu:
                raise DevClusterError("no GPU node left to remove")
            name = gpu[-1]
        self._kubectl_like("DELETE", f"/api/v1/nodes/{name}", state, None, ok_missing=True)
        if name in state.node_names:
            state.node_names.remove(name)
            self._save_state(state)
        return name

    def set_node_ready(self, name: str, ready: bool) -> None:
        """Make a node report NotReady (ready=False), as if its kubelet turned unhealthy, or Ready again.

        kwok's `node-not-ready` chaos stage reacts to the label; the node-lifecycle controller then taints the node
        `node.kubernetes.io/not-ready:NoExecute`, which evicts pods after their toleration seconds.
        """
        state = self._require_state()
        patch = {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true" if not ready else None}}}
        self._kubectl_like("PATCH", f"/api/v1/nodes/{name}", state, patch)

    def node_names(self) -> list[str]:
        return list(self._require_state().node_names)

    def env(self) -> dict[str, str]:
        """Environment that points endpointctl's Kubernetes provider at this cluster."""
        return {"ENDPOINTCTL_PROVIDER": "kubernetes", "KUBECONFIG": str(self.kubeconfig)}

    # --- internals ---------------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        pki = self.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return httpx.Client(verify=ctx, timeout=15.0)

    def _kubectl_like(self, method: str, path: str, state: ClusterState, body: dict | None, *,
                      ok_missing: bool = False) -> None:
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        with self._http() as client:
            resp = client.request(method, state.server + path, headers={"Content-Type": content_type},
                                  content=json.dumps(body) if body is not None else None)
        if resp.status_code == 404 and ok_missing:
            return
        if resp.status_code >= 400:
            raise DevClusterError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:300]}")

    def _write_kubeconfig(self, state: ClusterState, pki: Pki) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "endpointctl-dev",
            "clusters": [{"name": "endpointctl-dev", "cluster": {
                "server": state.server, "certificate-authority": str(pki.ca_cert)}}],
            "users": [{"name": "endpointctl-admin", "user": {
                "client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)}}],
            "contexts": [{"name": "endpointctl-dev", "context": {
                "cluster": "endpointctl-dev", "user": "endpointctl-admin", "namespace": "default"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _etcd_args(self, s: ClusterState) -> list[str]:
        peer = f"http://127.0.0.1:{s.etcd_peer_port}"
        client = f"http://127.0.0.1:{s.etcd_port}"
        return ["--name=devcluster", f"--data-dir={self._data_dir / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=devcluster={peer}", "--auto-compaction-retention=1",
                "--quota-backend-bytes=4294967296", "--unsafe-no-fsync=true", "--log-level=warn"]

    def _apiserver_args(self, s: ClusterState, pki: Pki) -> list[str]:
        return [f"--etcd-servers=http://127.0.0.1:{s.etcd_port}", "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1", f"--secure-port={s.apiserver_port}",
                f"--cert-dir={self._data_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.server_cert}", f"--tls-private-key-file={pki.server_key}",
                f"--client-ca-file={pki.ca_cert}", f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
                "--endpoint-reconciler-type=none", "--kubelet-preferred-address-types=InternalIP", "--v=1"]

    @property
    def audit_log(self) -> Path:
        return self._data_dir / "audit.log"

    def _audit_args(self, audit: bool) -> list[str]:
        if not audit:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                          "omitStages": ["RequestReceived"], "rules": [{"level": "Metadata"}]}))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=0",
                "--audit-log-format=json", "--audit-log-mode=blocking"]

    def audit_records(self, *, since_offset: int = 0) -> tuple[list[dict], int]:
        """Audit records written after byte `since_offset` (one per request, with the `stages` seen: a watch
        logs ResponseStarted and ResponseComplete), and the new offset. Needs `up(audit=True)`."""
        records: dict[str, dict] = {}
        with open(self.audit_log, "rb") as f:
            f.seek(since_offset)
            data = f.read()
        end = since_offset + data.rfind(b"\n") + 1
        for line in data[: end - since_offset].splitlines():
            if line.strip():
                rec = json.loads(line)
                first = records.setdefault(rec["auditID"], {**rec, "stages": []})
                first["stages"].append(rec.get("stage"))
        return list(records.values()), end

    def _controller_manager_args(self, pki: Pki) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0",
                f"--root-ca-file={pki.ca_cert}", f"--service-account-private-key-file={pki.sa_key}",
                "--node-monitor-period=2s", f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                "--kube-api-qps=500", "--kube-api-burst=1000", "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10", "--v=1"]

    def _scheduler_args(self) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0",
                "--kube-api-qps=500", "--kube-api-burst=1000", "--v=1"]

    def _kwok_args(self, s: ClusterState, pki: Pki) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}", f"--config={self.state_dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_MANAGED_VALUE}",
                f"--tls-cert-file={pki.admin_cert}", f"--tls-private-key-file={pki.admin_key}",
                "--node-ip=127.0.0.1", "--cidr=10.0.0.0/16", f"--node-port={s.kwok_port}",
                f"--server-address=127.0.0.1:{s.kwok_port}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}", "--v=INFO"]

    def _start(self, state: ClusterState, comp: str, args: list[str]) -> None:
        binary = str(Path(state.bin_dir) / comp)
        log = open(self.log_dir / f"{comp}.log", "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen([binary, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.state_dir)
        finally:
            log.close()
        self._children[proc.pid] = proc
        state.pids[comp] = proc.pid
        self._save_state(state)

    def _check_alive(self, state: ClusterState) -> None:
        for comp, pid in state.pids.items():
            if not _pid_alive(pid, str(Path(state.bin_dir) / comp)):
                tail = _tail(self.log_dir / f"{comp}.log")
                raise ComponentExited(f"{comp} exited during start-up ({self._how_it_ended(pid)}); "
                                      f"last log lines:\n{tail}")

    def _how_it_ended(self, pid: int) -> str:
        proc = self._children.get(pid)
        if proc is None:
            return "exit status unknown: not our child"
        # The caller saw it gone from /proc; a process in the middle of exiting is reapable a moment later.
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "exit status unknown: still exiting"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def _wait_http(self, url: str, deadline: float, what: str) -> None:
        state = self._load_state()
        assert state is not None
        last = "no answer yet"
        with self._http() as client:
            while True:
                try:
                    resp = client.get(url)
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                self._check_alive(state)
                if time.monotonic() > deadline:
                    raise ComponentStalled(f"{what} not healthy at {url} in time (last: {last}); last log lines:\n"
                                           f"{_tail(self.log_dir / f'{what}.log')}")
                time.sleep(0.2)

    def _wait_ready(self, state: ClusterState, deadline: float) -> None:
        """Nodes Ready (kwok runs) and the default service account exists (the controller manager runs)."""
        ready: set[str] = set()
        sa_status = "not asked yet"
        with self._http() as client:
            while True:
                self._check_alive(state)
                try:
                    nodes = client.get(f"{state.server}/api/v1/nodes").json().get("items", [])
                    ready = {n["metadata"]["name"] for n in nodes
                             if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in n.get("status", {}).get("conditions", []))}
                    sa = client.get(f"{state.server}/api/v1/namespaces/default/serviceaccounts/default")
                    sa_status = f"HTTP {sa.status_code}"
                    if set(state.node_names) <= ready and sa.status_code == 200:
                        return
                except httpx.HTTPError as exc:  # a busy API server times out now and then; the deadline decides
                    sa_status = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    missing = sorted(set(state.node_names) - ready)
                    logs = "\n".join(f"--- {c}:\n{_tail(self.log_dir / f'{c}.log', 8)}"
                                     for c in ("kwok", "kube-controller-manager"))
                    raise ComponentStalled(f"cluster not ready in time (nodes not Ready: {missing}, default "
                                           f"service account: {sa_status}); last log lines:\n{logs}")
                time.sleep(0.3)


def _stop_pid(pid: int, binary: str, grace: float = 10.0) -> None:
    if not _pid_alive(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not _pid_alive(pid, binary):
            _reap(pid)
            return
        _reap(pid)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (the pytest fixture), so no zombie is left."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _machine_context(path: Path) -> str:
    """Free disk, free memory and load: a start that fails for want of one of them says so in its error."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(f"free disk {shutil.disk_usage(path).free / 2**30:.1f} GiB")
    with contextlib.suppress(OSError, ValueError, KeyError):
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        parts.append(f"available memory {int(meminfo['MemAvailable'].split()[0]) / 2**20:.1f} GiB")
    with contextlib.suppress(OSError):
        parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    return ", ".join(parts)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
