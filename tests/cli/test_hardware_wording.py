"""On the embedded default the hardware names this machine, and a GPU it does not have is refused (issue 20, item 9).

The local provider runs every instance as processes on this host whatever vendor it names, so the catalog says which
host that is, and a GPU instance type on a host without a GPU is refused at create time with the reason and the
setting that opts into running it on the CPU — not accepted and run on the CPU unannounced.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.catalog import GPU_EMULATION_SETTING, Machine, load_catalog
from common.errors import InvalidSpec
from tests.cli.conftest import Cli, ControlPlane, cli_for, start_controlplane
from tests.fixtures.processes import stop_process_group

NO_GPU = Machine(name="testhost", cpus=2, memory_gb=8.0, cpu_model="Test CPU")
ONE_GPU = Machine(name="gpuhost", cpus=8, memory_gb=64.0, cpu_model="Test CPU", gpus=("NVIDIA H200",))
A100 = {"vendor": "aws", "region": "us-east-1", "instance_type": "nvidia-a100", "instance_size": "x2"}


@pytest.fixture(scope="module")
def plain_controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane on the local provider as the operator leaves it: no GPU emulation."""
    proc, cp = start_controlplane(tmp_path_factory.mktemp("hw-data"), token="admin-" + secrets.token_hex(16),
                                  gpu_emulation=False)
    try:
        yield cp
    finally:
        stop_process_group(proc)


@pytest.fixture
def hcli(tmp_path: Path, plain_controlplane: ControlPlane) -> Cli:
    return cli_for(tmp_path, url=plain_controlplane.url, token=plain_controlplane.admin_token)


def test_gpu_without_a_gpu_is_refused_with_the_way_out() -> None:
    catalog = load_catalog().on_machine(NO_GPU, gpu_emulation=False)
    with pytest.raises(InvalidSpec) as refused:
        catalog.resolve(**A100, accelerator="gpu")
    assert refused.value.param == "compute.accelerator"
    assert "testhost" in str(refused.value) and "no GPU" in str(refused.value) and GPU_EMULATION_SETTING in str(refused.value)
    assert catalog.resolve(vendor="local", region="local", instance_type="cpu", instance_size="x2").accelerator == "cpu"
    # Opted in, or on a machine with a GPU, it is accepted; without a machine (Kubernetes) the catalog decides alone.
    assert load_catalog().on_machine(NO_GPU, gpu_emulation=True).resolve(**A100).numAccelerators == 2
    assert load_catalog().on_machine(ONE_GPU, gpu_emulation=False).resolve(**A100).numAccelerators == 2
    assert load_catalog().resolve(**A100).numAccelerators == 2


def test_the_local_catalog_names_the_machine() -> None:
    wire = load_catalog().on_machine(NO_GPU, gpu_emulation=False).to_wire()
    assert wire["machine"]["name"] == "testhost" and wire["machine"]["gpus"] == []
    local = {c["id"]: c for v in wire["vendors"] if v["name"] == "local" for r in v["regions"] for c in r["computes"]}
    assert "testhost" in local["local-local-cpu-x2"]["architecture"]
    assert local["local-local-nvidia-gpu-x1"]["status"] == "not_available"
    aws = {c["id"]: c for v in wire["vendors"] if v["name"] == "aws" for r in v["regions"] for c in r["computes"]}
    assert aws["aws-us-east-1-nvidia-a100-x2"]["status"] == "not_available"
    assert aws["aws-us-east-1-intel-icl-x2"]["status"] == "available"

    emulated = load_catalog().on_machine(NO_GPU, gpu_emulation=True).to_wire()
    local = {c["id"]: c for v in emulated["vendors"] if v["name"] == "local" for r in v["regions"] for c in r["computes"]}
    assert local["local-local-nvidia-gpu-x1"]["status"] == "available"
    assert "emulated" in local["local-local-nvidia-gpu-x1"]["architecture"]
    assert "machine" not in load_catalog().to_wire()


def test_machine_detection_reads_the_kernel(tmp_path: Path) -> None:
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    (proc / "driver" / "nvidia" / "gpus" / "0000:01:00.0").mkdir(parents=True)
    dev.mkdir()
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemAvailable:    8000000 kB\n")
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Example CPU @ 3GHz\n")
    (proc / "driver" / "nvidia" / "gpus" / "0000:01:00.0" / "information").write_text("Model: \t NVIDIA L4\nIRQ: 1\n")
    machine = Machine.detect(proc=proc, dev=dev)
    assert machine.gpus == ("NVIDIA L4",) and machine.cpu_model == "Example CPU @ 3GHz" and machine.memory_gb == 15.6
    (proc / "driver" / "nvidia" / "gpus" / "0000:01:00.0" / "information").unlink()
    (proc / "driver" / "nvidia" / "gpus" / "0000:01:00.0").rmdir()
    assert Machine.detect(proc=proc, dev=dev).gpus == ()
    (dev / "nvidia0").touch()
    (dev / "nvidiactl").touch()
    assert Machine.detect(proc=proc, dev=dev).gpus == ("NVIDIA GPU",)


def test_hardware_and_describe_name_this_machine(hcli: Cli, tmp_path: Path) -> None:
    here = Machine.detect()
    r = hcli("hardware")
    assert r.code == 0, r
    assert f"runs on this machine ({socket.gethostname()}" in r.stderr, r
    data = json.loads(hcli("hardware", "-o", "json").stdout)
    assert data["machine"]["name"] == socket.gethostname()

    # The quick start's create: the instance type of this machine, and describe says local, not a cloud region.
    name = "hw-" + secrets.token_hex(3)
    r = hcli("create", name, "-r", str(tmp_path / "model"), "--instance-type", "cpu", "--instance-size", "x2")
    assert r.code == 0, r
    r = hcli("describe", name)
    assert r.code == 0, r
    assert "local / local" in r.stdout and "aws" not in r.stdout and "us-east-1" not in r.stdout, r
    assert f"local / local — runs on this machine ({socket.gethostname()}:" in r.stdout, r

    # A spec naming a cloud region still runs here, and describe says so beside what was asked for.
    r = hcli("create", name + "-aws", "-r", str(tmp_path / "model"), "--vendor", "aws", "--region", "us-east-1",
             "--instance-type", "intel-icl", "--instance-size", "x2")
    assert r.code == 0, r
    r = hcli("describe", name + "-aws")
    assert r.code == 0, r
    assert f"aws / us-east-1 — runs on this machine ({socket.gethostname()}:" in r.stdout, r

    r = hcli("create", name + "-gpu", "-r", str(tmp_path / "model"), "--accelerator", "gpu", "--vendor", "aws",
             "--region", "us-east-1", "--instance-type", "nvidia-a100", "--instance-size", "x2")
    if here.gpus:
        assert r.code == 0, r
    else:
        assert r.code == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no GPU" in lines[0] and GPU_EMULATION_SETTING in lines[0], r


def test_the_local_provider_names_the_machine_for_a_cloud_instance(tmp_path: Path) -> None:
    """`describe` shows this event: a spec naming aws / us-east-1 runs here, and the event says where."""
    import dataclasses

    from common.config import Settings
    from common.models import Endpoint
    from worker.providers.local import LocalProvider
    from worker.reconcile import build_deployment

    spec = {"compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x2",
                        "scaling": {"minReplica": 1, "maxReplica": 1}},
            "model": {"repository": "acme/tiny", "framework": "pytorch", "task": "text-generation",
                      "image": {"huggingface": {}}},
            "provider": {"vendor": "aws", "region": "us-east-1"}}
    row = Endpoint(id=1, namespace="alice", name="demo", type="protected", spec=spec, spec_revision=1, secrets={})
    deployment = build_deployment(row, Settings(data_dir=tmp_path), replicas=1)
    local = LocalProvider(tmp_path / "data")
    [notice] = local.spec_notices(deployment)
    assert notice.reason == "LocalHardware"
    assert "aws / us-east-1 intel-icl x2" in notice.message and f"this machine ({socket.gethostname()}:" in notice.message
    on_local = dataclasses.replace(deployment, hardware=dataclasses.replace(deployment.hardware, vendor="local",
                                                                            region="local"))
    assert local.spec_notices(on_local) == []

