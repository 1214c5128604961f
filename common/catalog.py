"""The hardware catalog: which (vendor, region, instanceType, instanceSize) combinations endpoints may ask for.

Loaded from the YAML shipped in `common/data/hardware.yaml`, or from `ENDPOINTCTL_HARDWARE_CATALOG`.
The API validates compute requests against it and serves it at `GET /v2/provider/{namespace}`; the Kubernetes
provider maps entries to GPU counts and node selectors (`gpuProduct`, `nodeSelector`).

On the local provider (the embedded default) every instance, whatever vendor it names, runs as processes on this
machine, so the catalog the API uses there (`catalog_for`) knows the machine: the `local` vendor's entries name it,
the body carries a `machine` block, and a GPU instance on a machine without a GPU is refused at create time — not
discovered as a slow CPU replica later — unless the operator opted into running GPU instance types on the CPU
(`ENDPOINTCTL_LOCAL_GPU_EMULATION`). The worker resolves hardware with the plain catalog: an endpoint accepted
earlier keeps running when the setting changes.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import CatalogError, InvalidSpec

if TYPE_CHECKING:
    from common.config import Settings

LOCAL_VENDOR = "local"
GPU_EMULATION_SETTING = "ENDPOINTCTL_LOCAL_GPU_EMULATION"

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
class Machine:
    """The host the local provider runs every replica on, as the catalog names it."""

    name: str
    cpus: int
    memory_gb: float
    cpu_model: str
    gpus: tuple[str, ...] = ()

    @classmethod
    def detect(cls, proc: Path = Path("/proc"), dev: Path = Path("/dev")) -> Machine:
        """From the kernel's view (no torch import): CPUs this process may use, MemTotal, the CPU model, and the
        NVIDIA devices the driver exposes (names from /proc/driver/nvidia, else one "NVIDIA GPU" per device)."""
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        memory_gb = 0.0
        cpu_model = platform.processor() or platform.machine()
        try:
            for line in (proc / "meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_gb = round(int(line.split()[1]) / 1024**2, 1)
                    break
            for line in (proc / "cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        except (OSError, ValueError, IndexError):
            pass
        names = []
        for info in sorted((proc / "driver" / "nvidia" / "gpus").glob("*/information")):
            try:
                model = next((ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
                              if ln.startswith("Model:")), "NVIDIA GPU")
            except OSError:
                model = "NVIDIA GPU"
            names.append(model)
        if not names:
            names = ["NVIDIA GPU" for d in dev.glob("nvidia[0-9]*") if d.name[6:].isdigit()]
        return cls(name=socket.gethostname() or "localhost", cpus=cpus, memory_gb=memory_gb, cpu_model=cpu_model,
                   gpus=tuple(names))

    def describe(self) -> str:
        gpus = f"{len(self.gpus)} × {self.gpus[0]}" if self.gpus else "no GPU"
        return f"this machine ({self.name}: {self.cpus} CPUs, {self.memory_gb:g} GiB, {gpus})"

    def to_wire(self, *, gpu_emulation: bool) -> dict[str, Any]:
        return {"name": self.name, "cpus": self.cpus, "memoryGb": self.memory_gb, "cpuModel": self.cpu_model,
                "gpus": list(self.gpus), "gpuEmulation": gpu_emulation and not self.gpus,
                "description": self.describe()}


@dataclass(frozen=True)
class Catalog:
    vendors: tuple[Vendor, ...]
    _index: dict[tuple[str, str, str, str], Instance] = field(default_factory=dict, repr=False)
    # Set on the local provider: every instance runs on this machine (see the module docstring).
    machine: Machine | None = None
    gpu_emulation: bool = False

    def on_machine(self, machine: Machine, *, gpu_emulation: bool) -> Catalog:
        return replace(self, machine=machine, gpu_emulation=gpu_emulation)

    def _gpu_missing(self, inst: Instance) -> bool:
        return (self.machine is not None and inst.accelerator == "gpu" and not self.machine.gpus
                and not self.gpu_emulation)

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
        if self._gpu_missing(inst):
            raise InvalidSpec(f"{instance_type} {instance_size} needs a GPU and the local provider runs on "
                              f"{self.machine.describe()}: pick a CPU instance (`endpointctl hardware`), or have the "
                              f"operator set {GPU_EMULATION_SETTING}=true to run GPU instance types on the CPU",
                              param="compute.accelerator")
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
                    if self.machine is not None:
                        self._name_the_machine(entry, inst, local=vendor.name == LOCAL_VENDOR)
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
        body: dict[str, Any] = {"vendors": vendors}
        if self.machine is not None:
            body["machine"] = self.machine.to_wire(gpu_emulation=self.gpu_emulation)
        return body

    def _name_the_machine(self, entry: dict[str, Any], inst: Instance, *, local: bool) -> None:
        """The local vendor's entries say which machine they are; GPU entries this machine cannot run are
        `not_available` with the reason, whatever their vendor, as `resolve` would refuse them."""
        machine = self.machine
        assert machine is not None
        if self._gpu_missing(inst):
            entry["status"] = "not_available"
            if local:
                entry["architecture"] = f"no GPU on this machine ({machine.name}); {GPU_EMULATION_SETTING}=true runs it on the CPU"
        elif local and inst.accelerator == "gpu":
            entry["architecture"] = (f"{machine.gpus[0]} on this machine ({machine.name})" if machine.gpus
                                     else f"emulated on the CPU of this machine ({machine.name}: {machine.cpu_model})")
        elif local:
            entry["architecture"] = f"{machine.cpu_model} on this machine ({machine.name})"


def parse_catalog(text: str, *, source: str = "<catalog>") -> Catalog:
    try:
        raw = yaml.safe_load(text)
        return Catalog.from_file(CatalogFile.model_validate(raw))
    except (yaml.YAMLError, ValidationError) as exc:
        raise CatalogError(f"invalid hardware catalog {source}: {exc}") from exc


def catalog_for(settings: Settings) -> Catalog:
    """The catalog the API validates and serves with: the configured one, on this machine for the local provider."""
    catalog = load_catalog(settings.hardware_catalog)
    if settings.provider == "local":
        catalog = catalog.on_machine(Machine.detect(), gpu_emulation=settings.local_gpu_emulation)
    return catalog


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
