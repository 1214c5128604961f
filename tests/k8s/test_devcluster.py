"""The simulated cluster itself: GPU-looking nodes, add/remove, and the `endpointctl dev cluster` verbs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cli.devcluster import DevCluster
from cli.devcluster.errors import DevClusterError

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]


def test_nodes_look_like_gpu_nodes(kube_api):
    nodes = {n.metadata.name: n for n in k8s.CoreV1Api(kube_api).list_node().items}
    gpu = [n for n in nodes.values() if "nvidia.com/gpu" in (n.status.allocatable or {})]
    cpu = [n for n in nodes.values() if "nvidia.com/gpu" not in (n.status.allocatable or {})]
    assert len(gpu) >= 2 and len(cpu) >= 1
    for node in gpu:
        labels = node.metadata.labels
        assert labels["node.kubernetes.io/instance-type"] == "nvidia-l4"
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
        assert node.status.capacity["nvidia.com/gpu"] == node.status.allocatable["nvidia.com/gpu"]
        assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
        assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in node.spec.taints)
    for node in [*gpu, *cpu]:
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def _cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "dev", "cluster", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ})


@pytest.mark.slow
def test_cli_up_add_remove_down_leaves_no_process(tmp_path, kube_cluster):
    state_dir = tmp_path / "dc"
    up = _cli("up", "--gpu-nodes", "1", "--gpus-per-node", "2", "--cpu-nodes", "0", "--instance-type", "nvidia-a10g",
              state_dir=state_dir)
    try:
        assert up.returncode == 0, up.stderr
        assert "export KUBECONFIG=" in up.stdout and "export ENDPOINTCTL_PROVIDER=kubernetes" in up.stdout
        path = _cli("kubeconfig", state_dir=state_dir)
        assert path.returncode == 0 and Path(path.stdout.strip()).is_file()
        added = _cli("add-node", "--gpus", "8", state_dir=state_dir)
        assert added.returncode == 0, added.stderr
        cluster = DevCluster(state_dir)
        api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        node = k8s.CoreV1Api(api).read_node(added.stdout.strip())
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A10G"
        removed = _cli("remove-node", state_dir=state_dir)
        assert removed.returncode == 0 and removed.stdout.strip() == added.stdout.strip()
        assert [n.metadata.name for n in k8s.CoreV1Api(api).list_node().items] == ["kwok-gpu-0"]
        api.close()
        pids = json.loads((state_dir / "state.json").read_text())["pids"]
    finally:
        down = _cli("down", state_dir=state_dir)
    assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    again = _cli("kubeconfig", state_dir=state_dir)
    assert again.returncode == 1 and "no running cluster" in again.stderr


def test_start_that_never_gets_healthy_retries_then_reports_every_attempt(tmp_path, kube_cluster):
    """A component that does not get healthy within an attempt's budget costs that attempt; after the last one the
    error names each attempt's reason and no process of any attempt is left running."""
    cluster = DevCluster(tmp_path / "dc")
    with pytest.raises(DevClusterError) as info:
        cluster.up(gpu_nodes=0, cpu_nodes=0, timeout=0.0)
    message = str(info.value)
    assert "did not start in 3 attempts" in message
    assert [line.split(":")[0] for line in message.splitlines() if line.startswith("attempt ")] == \
        ["attempt 1", "attempt 2", "attempt 3"]
    assert "etcd not healthy" in message and "last log lines" in message
    assert not cluster.is_running()
    assert not (tmp_path / "dc" / "state.json").exists()


def test_free_ports_stay_out_of_the_ephemeral_range():
    """Ports handed to the components are never ones an outgoing connection could take before the child binds."""
    from cli.devcluster.cluster import _ephemeral_range, _free_port

    low, high = _ephemeral_range()
    taken: set[int] = set()
    ports = [_free_port(taken) for _ in range(40)]
    assert len(set(ports)) == 40 and set(ports) == taken
    assert all(not low <= p <= high for p in ports)


def test_component_that_dies_says_how_it_ended(tmp_path):
    """A start that fails because a component exits reports its exit status and the machine's state, per attempt."""
    from cli.devcluster.binaries import NAMES, Binaries, find_binaries

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copytree(find_binaries().kwok_stage_dir, Binaries(bin_dir).kwok_stage_dir)
    for name in NAMES:  # `false` under each component's name: it runs, and exits with status 1 at once
        (bin_dir / name).symlink_to("/bin/false")
    cluster = DevCluster(tmp_path / "dc", binaries=Binaries(bin_dir))
    with pytest.raises(DevClusterError) as info:
        cluster.up(gpu_nodes=0, cpu_nodes=0, timeout=30.0)
    attempts = [line for line in str(info.value).splitlines() if line.startswith("attempt ")]
    assert len(attempts) == 3
    assert all("etcd exited during start-up (exit code 1)" in line for line in attempts)
    assert str(info.value).count("free disk ") == 3 and "load average" in str(info.value)
    assert not cluster.is_running()
