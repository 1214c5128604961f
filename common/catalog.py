"""The hardware catalog: which (vendor, region, instanceType, instanceSize) combinations endpoints may ask for.

Loaded from the YAML shipped in `common/data/hardware.yaml`, or from `ENDPOINTCTL_HARDWARE_CATALOG`.
The API validates compute requests against it and serves it at `GET /v2/provider/{namespace}`; the Kubernetes
provider maps entries to GPU counts and node selectors (`gpuProduct`, `nodeSelector`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import CatalogError, InvalidSpec

InstanceStatus = Literal["available", "low_availability", "not_available", "reserved", "deprecated"]


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    accelerator: Literal["cpu", "gpu", "neuron"]
    instanceType: str
    instanceSize: str
    architecture: str = ""
    numAccelerators: int = Field(0, ge=0)
    numCpus: int | None = Field(None, ge=0)
    memoryGb: float = Field(0, ge=0)
    gpuMemoryGb: float | None = Field(None, ge=0)
    pricePerHour: float = Field(0, ge=0)
    status: InstanceStatus = "available"
    maxAccelerators: int | None = Field(None, ge=0)
    gpuProduct: str | None = None
    nodeSelector: dict[str, str] = Field(default_factory=dict)


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    computes: list[Instance]


class Vendor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    regions: list[Region]


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vendors: list[Vendor]


@dataclass(frozen=True)
class Catalog:
    vendors: tuple[Vendor, ...]
    _index: dict[tuple[str, str, str, str], Instance] = field(default_factory=dict, repr=False)

    @classmethod
    def from_file(cls, data: CatalogFile) -> Catalog:
        index: dict[tuple[str, str, str, str], Instance] = {}
        for vendor in data.vendors:
            for region in vendor.regions:
                for inst in region.computes:
                    index[(vendor.name, region.name, inst.instanceType, inst.instanceSize)] = inst
        return cls(vendors=tuple(data.vendors), _index=index)

    def lookup(self, vendor: str, region: str, instance_type: str, instance_size: str) -> Instance | None:
        return self._index.get((vendor, region, instance_type, instance_size))

    def resolve(self, *, vendor: str, region: str, instance_type: str, instance_size: str,
                accelerator: str | None = None) -> Instance:
        """The catalog entry for a compute request, or `InvalidSpec` naming the valid choices at the first miss."""
        vendors = {v.name: v for v in self.vendors}
        if vendor not in vendors:
            raise InvalidSpec(f"unknown vendor {vendor!r}; valid vendors: {', '.join(sorted(vendors))}",
                              param="provider.vendor")
        regions = {r.name: r for r in vendors[vendor].regions}
        if region not in regions:
            raise InvalidSpec(f"unknown region {region!r} for vendor {vendor!r}; valid regions: "
                              f"{', '.join(sorted(regions))}", param="provider.region")
        computes = regions[region].computes
        types = sorted({c.instanceType for c in computes})
        if instance_type not in types:
            raise InvalidSpec(f"unknown instance type {instance_type!r} in {vendor}/{region}; valid instance types: "
                              f"{', '.join(types)}", param="compute.instanceType")
        sizes = [c.instanceSize for c in computes if c.instanceType == instance_type]
        inst = self.lookup(vendor, region, instance_type, instance_size)
        if inst is None:
            raise InvalidSpec(f"unknown instance size {instance_size!r} for {instance_type} in {vendor}/{region}; "
                              f"valid sizes: {', '.join(sizes)}", param="compute.instanceSize")
        if accelerator is not None and accelerator != inst.accelerator:
            raise InvalidSpec(f"accelerator {accelerator!r} does not match {instance_type} {instance_size}, "
                              f"which is {inst.accelerator!r}", param="compute.accelerator")
        if inst.status == "not_available":
            raise InvalidSpec(f"{inst.id} is not available", param="compute.instanceType")
        return inst

    def to_wire(self, used_accelerators: dict[str, int] | None = None,
                capacity: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
        """The `GET /v2/provider/{ns}` body huggingface_hub parses (quota included).

        `capacity` is what the worker last saw on the cluster per instance type (`allocatable`, `used`,
        `max_allocatable_per_node`, `max_free_per_node`); where known it replaces the static quota and status:
        an instance no node can ever hold is `not_available`, one that does not fit on any node right now is
        `low_availability`."""
        used = used_accelerators or {}
        capacity = capacity or {}
        vendors = []
        for vendor in self.vendors:
            regions = []
            for region in vendor.regions:
                computes = []
                for inst in region.computes:
                    entry = inst.model_dump(exclude={"maxAccelerators", "gpuProduct", "nodeSelector"})
                    entry["quota"] = {
                        "maxAccelerators": inst.maxAccelerators if inst.maxAccelerators is not None else 64,
                        "usedAccelerators": used.get(inst.instanceType, 0),
                    }
                    seen = capacity.get(inst.instanceType)
                    if seen is not None and inst.numAccelerators and inst.status not in ("deprecated", "reserved"):
                        entry["quota"] = {"maxAccelerators": seen["allocatable"], "usedAccelerators": seen["used"]}
                        if seen["max_allocatable_per_node"] < inst.numAccelerators:
                            entry["status"] = "not_available"
                        elif seen["max_free_per_node"] < inst.numAccelerators:
                            entry["status"] = "low_availability"
                        else:
                            entry["status"] = "available"
                    computes.append(entry)
                regions.append({"name": region.name, "computes": computes})
            vendors.append({"name": vendor.name, "regions": regions})
        return {"vendors": vendors}


def parse_catalog(text: str, *, source: str = "<catalog>") -> Catalog:
    try:
        raw = yaml.safe_load(text)
        return Catalog.from_file(CatalogFile.model_validate(raw))
    except (yaml.YAMLError, ValidationError) as exc:
        raise CatalogError(f"invalid hardware catalog {source}: {exc}") from exc


@lru_cache(maxsize=8)
def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path`, or the shipped default; cached, since it only changes with a restart."""
    if path is None:
        text = resources.files("common").joinpath("data/hardware.yaml").read_text()
        return parse_catalog(text, source="(shipped default)")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read hardware catalog {path}: {exc}") from exc
    return parse_catalog(text, source=str(path))
