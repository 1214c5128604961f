"""The hardware catalog: shipped default, override by configuration, clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from common.catalog import load_catalog, parse_catalog
from common.config import Settings
from common.errors import CatalogError, InvalidSpec
from tests.controlplane.conftest import ADMIN_TOKEN, payload

CUSTOM = """
vendors:
  - name: onprem
    regions:
      - name: rack-1
        computes:
          - {id: onprem-rack-1-nvidia-l40s-x4, accelerator: gpu, instanceType: nvidia-l40s, instanceSize: x4,
             numAccelerators: 4, memoryGb: 256, gpuMemoryGb: 192, pricePerHour: 0, gpuProduct: NVIDIA-L40S,
             nodeSelector: {pool: l40s}}
"""


def test_shipped_default_has_the_seed_example_and_the_local_vendor() -> None:
    catalog = load_catalog(None)
    inst = catalog.resolve(vendor="aws", region="us-east-1", instance_type="nvidia-a100", instance_size="x2")
    assert inst.numAccelerators == 2 and inst.accelerator == "gpu" and inst.gpuProduct
    for size in ("x1", "x2", "x4", "x8"):
        for itype in ("nvidia-t4", "nvidia-l4", "nvidia-a10g", "nvidia-a100", "nvidia-h100"):
            assert catalog.lookup("aws", "us-east-1", itype, size) is not None
    assert catalog.lookup("aws", "us-east-1", "intel-icl", "x1").accelerator == "cpu"
    assert catalog.lookup("local", "local", "cpu", "x1") is not None


def test_bad_catalog_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="invalid hardware catalog"):
        parse_catalog("vendors: [{name: x, regions: [{name: r, computes: [{id: a}]}]}]")
    with pytest.raises(CatalogError, match="invalid hardware catalog"):
        parse_catalog("vendors: [")
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")


def test_override_by_configuration(tmp_path: Path) -> None:
    from controlplane import migrate
    from controlplane.app import create_app

    path = tmp_path / "hw.yaml"
    path.write_text(CUSTOM)
    inst = load_catalog(path).resolve(vendor="onprem", region="rack-1", instance_type="nvidia-l40s",
                                      instance_size="x4")
    assert inst.nodeSelector == {"pool": "l40s"}
    with pytest.raises(InvalidSpec, match="valid vendors: onprem"):
        load_catalog(path).resolve(vendor="aws", region="us-east-1", instance_type="nvidia-a100", instance_size="x2")

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}", admin_token=ADMIN_TOKEN,
                        hardware_catalog=path, local_gpu_emulation=True)
    migrate.upgrade(settings)
    with TestClient(create_app(settings, enqueue=lambda _id: True)) as http:
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        r = http.post("/v2/endpoint/admin", json=payload("x"), headers=admin)
        assert r.status_code == 400 and "valid vendors: onprem" in r.json()["error"]
        body = payload("y", provider={"vendor": "onprem", "region": "rack-1"})
        body["compute"].update(instanceType="nvidia-l40s", instanceSize="x4")
        assert http.post("/v2/endpoint/admin", json=body, headers=admin).status_code == 201
        vendors = http.get("/v2/provider/admin", headers=admin).json()["vendors"]
        assert [v["name"] for v in vendors] == ["onprem"]
        compute = vendors[0]["regions"][0]["computes"][0]
        assert compute["quota"] == {"maxAccelerators": 64, "usedAccelerators": 4} and "nodeSelector" not in compute


def test_observed_cluster_capacity_drives_status_and_quota() -> None:
    from common.catalog import load_catalog

    catalog = load_catalog(None)
    seen = {"nvidia-l4": {"allocatable": 8, "used": 4, "max_allocatable_per_node": 4, "max_free_per_node": 2}}
    wire = catalog.to_wire({}, seen)
    computes = {(c["instanceType"], c["instanceSize"]): c for v in wire["vendors"] if v["name"] == "aws"
                for r in v["regions"] if r["name"] == "us-east-1" for c in r["computes"]}
    x1, x4, x8 = computes[("nvidia-l4", "x1")], computes[("nvidia-l4", "x4")], computes[("nvidia-l4", "x8")]
    assert x1["status"] == "available" and x1["quota"] == {"maxAccelerators": 8, "usedAccelerators": 4}
    assert x4["status"] == "low_availability"  # a 4-GPU node exists, but none has 4 free right now
    assert x8["status"] == "not_available"  # no node could ever hold 8
    # Instance types the cluster did not report keep the static catalog figures.
    assert computes[("nvidia-a100", "x1")]["status"] == "available"
    assert computes[("nvidia-a100", "x1")]["quota"]["usedAccelerators"] == 0
