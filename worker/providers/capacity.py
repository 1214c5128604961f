"""What one local replica needs, what this host has free, and how many new replicas fit.

Why not the catalog's instance sizes: the local provider runs every endpoint on this host's own devices whatever
instance it names (an `nvidia-a100 x4` endpoint runs on a laptop's CPU), so the catalog says nothing about what a
replica will use here. What does: the model's weights (read into memory once, plus working memory) and a share of
the CPUs. The defaults below fit a small model on a small machine; operators size them with the settings named in
each field.

Accounting works like Kubernetes' requests: every live replica of this data directory holds its CPU share until it
stops, so `maxReplica = 100` on a two-core host starts only the replicas whose shares fit. Memory is checked against
what the kernel says is available now (MemAvailable, which already counts every process of the host), minus a
reserve, minus the need of our replicas that have not finished loading (they have not allocated their memory yet).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")


@dataclass(frozen=True)
class LocalCapacity:
    """Sizing of local replicas (settings `ENDPOINTCTL_LOCAL_*`)."""

    replica_cpus: float = 0.5  # ENDPOINTCTL_LOCAL_REPLICA_CPUS: the CPU share each replica holds
    replica_memory_gb: float | None = None  # ENDPOINTCTL_LOCAL_REPLICA_MEMORY_GB; unset: from the model's weights
    # Interpreter, torch, transformers and the server beside the weights (when derived from them): about what a
    # fresh runtime process holds before it loads a model. Forked replicas share much of it, so this errs high.
    memory_overhead_gb: float = 1.0
    memory_per_weight_byte: float = 1.5  # weights in memory, plus the KV cache and activations they drive
    reserve_cpus: float = 0.0  # ENDPOINTCTL_LOCAL_RESERVE_CPUS: kept for the stack itself and the host
    reserve_memory_gb: float = 1.0  # ENDPOINTCTL_LOCAL_RESERVE_MEMORY_GB


@dataclass(frozen=True)
class Need:
    cpus: float
    memory_bytes: int


@dataclass(frozen=True)
class Free:
    cpus: float
    total_cpus: float
    memory_bytes: int | None  # None when the kernel does not say (no /proc/meminfo): memory is then not checked


def host_cpus() -> float:
    """CPUs this process may run on (an affinity mask or a cpuset narrows them)."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(os.cpu_count() or 1)


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# A GGUF file is dequantized at load (to fp32 on CPU), so in memory it is its file size times 32 / its bits per
# weight. The bits come from the quantization its name announces, as the runtime picks files by the same names
# (runtime/engine/gguf_files.py); a name that says nothing counts as 4-bit, the most common and the largest expansion.
_GGUF_BITS = (("F32", 32.0), ("BF16", 16.0), ("F16", 16.0), ("Q8", 8.5), ("Q6", 6.6), ("Q5", 5.5), ("Q4", 4.5),
              ("Q3", 3.4), ("Q2", 2.6), ("IQ", 2.0))


def _in_memory_bytes(path: Path, size: int) -> int:
    if path.suffix != ".gguf":
        return size
    name = path.name.upper()
    bits = next((b for tag, b in _GGUF_BITS if tag in name), 4.5)
    return int(size * 32.0 / bits)


def weights_bytes(repository: str) -> int:
    """Bytes the weights under a local model directory take in memory once loaded; 0 for a hub id (not downloaded
    yet: size unknown)."""
    root = Path(repository).expanduser()
    if not root.is_dir():
        return 0
    total = 0
    largest_gguf = 0  # a GGUF repository often holds several quantizations of one model: one of them is loaded
    for path in root.rglob("*"):
        if path.suffix in WEIGHT_SUFFIXES:
            try:
                size = _in_memory_bytes(path, path.stat().st_size)
            except OSError:
                continue
            if path.suffix == ".gguf":
                largest_gguf = max(largest_gguf, size)
            else:
                total += size
    return total + largest_gguf


def replica_need(capacity: LocalCapacity, repository: str) -> Need:
    if capacity.replica_memory_gb is not None:
        memory = int(capacity.replica_memory_gb * GIB)
    else:
        memory = int(capacity.memory_overhead_gb * GIB + capacity.memory_per_weight_byte * weights_bytes(repository))
    return Need(cpus=max(0.0, capacity.replica_cpus), memory_bytes=max(0, memory))


def free_capacity(capacity: LocalCapacity, *, held_cpus: float, loading_bytes: int) -> Free:
    total = host_cpus()
    available = available_memory()
    memory = None if available is None else available - int(capacity.reserve_memory_gb * GIB) - loading_bytes
    return Free(cpus=total - capacity.reserve_cpus - held_cpus, total_cpus=total, memory_bytes=memory)


def fitting(need: Need, free: Free, wanted: int) -> int:
    """How many of `wanted` new replicas fit in `free`."""
    count = wanted
    if need.cpus > 0:
        count = min(count, math.floor(free.cpus / need.cpus + 1e-9))
    if need.memory_bytes > 0 and free.memory_bytes is not None:
        count = min(count, free.memory_bytes // need.memory_bytes)
    return max(0, count)


def shortage_message(need: Need, free: Free, *, running: int, wanted: int) -> str:
    """`not enough capacity: ...` naming each resource that is short and by how much."""
    short = []
    if need.cpus > 0 and free.cpus + 1e-9 < need.cpus:
        short.append(f"CPU: each replica needs {need.cpus:g}, {max(0.0, free.cpus):g} of {free.total_cpus:g} free "
                     f"(ENDPOINTCTL_LOCAL_REPLICA_CPUS, ENDPOINTCTL_LOCAL_RESERVE_CPUS)")
    if need.memory_bytes > 0 and free.memory_bytes is not None and free.memory_bytes < need.memory_bytes:
        short.append(f"memory: each replica needs {need.memory_bytes / GIB:.2f} GiB, "
                     f"{max(0, free.memory_bytes) / GIB:.2f} GiB available after the reserve "
                     f"(ENDPOINTCTL_LOCAL_REPLICA_MEMORY_GB, ENDPOINTCTL_LOCAL_RESERVE_MEMORY_GB)")
    return f"not enough capacity: {running} of {wanted} replicas started on this host; " + "; ".join(short)
