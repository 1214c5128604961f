"""The fused CPU kernels of ``kernels.c``: built once with the machine's C compiler, loaded through ctypes.

Why ctypes and a plain C file rather than a PyTorch C++ extension: the kernels only need raw pointers, a
plain C file compiles in about a second (a torch extension takes a minute of template-heavy headers and pins the
build to one torch ABI), and a ctypes call costs ~2 us, less than a dispatcher op. The library links the same
OpenMP runtime torch has loaded (``libgomp.so.1`` is resolved to torch's copy by its soname), so its parallel
regions share torch's thread pool instead of competing with a second one.

The library is built lazily on first use (``scripts/bootstrap.sh`` and the runtime image build it ahead) into
``$ENDPOINTCTL_NATIVE_DIR`` (default ``~/.cache/endpointctl/native``), named by a hash of the source and flags so
an edited kernel is rebuilt. Without a compiler, on CUDA, or with ``ENDPOINTCTL_NATIVE_KERNELS=0``, the runner
keeps its PyTorch forward: the kernels are an optimisation, never a requirement.

Arithmetic is fp32 throughout; the products' weights may be fp32, bf16 or fp16 (:data:`WEIGHT_TYPES`), widened to
fp32 in registers as they are read, so 16-bit weights halve the bytes a decode step streams without changing
how anything is summed.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger("runtime.engine.native")

SOURCE = Path(__file__).with_name("kernels.c")
_F = ctypes.c_float
_I = ctypes.c_int
_P = ctypes.c_void_p
PANEL = 16
"""Output columns per packed weight panel (kernels.c's PANEL)."""
WEIGHT_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
"""The products' weight dtypes and kernels.c's codes for them (WT_F32, WT_BF16, WT_F16)."""


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled or loaded; the message carries the compiler's output."""


def enabled_by_env() -> bool:
    return os.environ.get("ENDPOINTCTL_NATIVE_KERNELS", "1").strip().lower() not in {"0", "false", "no", "off"}


# F16C (fp16 -> fp32 in one instruction) came with the first AVX2 CPUs; the portable build converts in C.
ISA_FLAGS = {"avx512": ["-mavx512f", "-mavx2", "-mfma", "-mf16c"], "avx2": ["-mavx2", "-mfma", "-mf16c"],
             "generic": []}


def supported_isas() -> list[str]:
    """The builds this CPU runs, widest first, as torch found its features at import: AVX-512 (products twice as
    wide), AVX2+FMA, portable."""
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": ["avx512", "avx2", "generic"], "AVX2": ["avx2", "generic"]}.get(capability, ["generic"])


def host_isa() -> str:
    """The widest supported build, or the narrower one ``ENDPOINTCTL_NATIVE_ISA`` names."""
    supported = supported_isas()
    wanted = os.environ.get("ENDPOINTCTL_NATIVE_ISA", "").strip().lower()
    if wanted:
        if wanted not in supported:
            raise NativeBuildError(f"ENDPOINTCTL_NATIVE_ISA={wanted} is not one this CPU runs ({', '.join(supported)})")
        return wanted
    return supported[0]


def _cache_dir() -> Path:
    configured = os.environ.get("ENDPOINTCTL_NATIVE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "endpointctl" / "native"


def library_path(isa: str | None = None) -> Path:
    isa = isa or host_isa()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(ISA_FLAGS[isa]).encode()).hexdigest()[:16]
    return _cache_dir() / f"libendpointctl-kernels-{digest}-{isa}.so"


def build(isa: str | None = None) -> Path:
    """Compile the kernels for ``isa`` (default: this host's) unless already built; return the library's path."""
    isa = isa or host_isa()
    path = library_path(isa)
    if path.exists():
        return path
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise NativeBuildError("no C compiler (cc or gcc) on PATH")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed: concurrent builders (test workers, replicas) never load a
        # half-written file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".so.tmp")
        os.close(fd)
        cmd = [compiler, "-O3", "-std=gnu11", "-fPIC", "-shared", "-fopenmp", *ISA_FLAGS[isa], "-o", tmp, str(SOURCE),
               "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise NativeBuildError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        # mkstemp makes the file private; an image built as root is run by another user.
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        tmp = None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeBuildError(f"cannot build {path} with {compiler}: {exc}") from exc
    finally:
        if tmp is not None:
            os.unlink(tmp)
    log.info("built native kernels: %s", path)
    return path


class LayerTable(ctypes.Structure):
    """kernels.c's ``ek_layer``: one decoder layer's weight and cache pointers, for :meth:`NativeKernels.forward`.

    The pointers are only valid while the tensors they came from live: the runner keeps both (see
    ``layer_table``) and rebuilds the table when its caches grow."""

    _fields_ = [*((name, _P) for name in ("ln1", "ln2", "qkv", "qkv_bias", "o", "o_bias", "gate_up", "down",
                                           "k_cache", "v_cache")),
                ("wtype", _I)]


PROJECTIONS = ("qkv", "o", "gate_up", "down")


def _ptr(t: torch.Tensor | None, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> int | None:
    if t is None:
        return None
    if not t.is_contiguous() or t.device.type != "cpu" or t.dtype not in dtypes:
        raise ValueError(f"native kernels need contiguous CPU tensors of {', '.join(map(str, dtypes))}")
    return t.data_ptr()


def layer_table(layers: list[dict[str, torch.Tensor | None]]) -> ctypes.Array:
    """An ``ek_layer[]`` for ``layers``: dicts with LayerTable's field names (projections packed, all four of one
    of WEIGHT_TYPES; biases may be None; everything else float32)."""
    table = (LayerTable * len(layers))()
    for entry, layer in zip(table, layers, strict=True):
        dtypes = {layer[name].dtype for name in PROJECTIONS}
        if len(dtypes) != 1 or not dtypes <= WEIGHT_TYPES.keys():
            raise ValueError(f"a layer's projections must share one of {list(WEIGHT_TYPES)}, not {dtypes}")
        (dtype,) = dtypes
        for name, _ in LayerTable._fields_[:-1]:
            setattr(entry, name, _ptr(layer[name], (dtype,) if name in PROJECTIONS else (torch.float32,)))
        entry.wtype = WEIGHT_TYPES[dtype]
    return table


class NativeKernels:
    """Typed wrappers over the library's functions; tensors must be contiguous CPU fp32 (int32 for indices, packed
    weights of WEIGHT_TYPES)."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.isa = path.stem.rsplit("-", 1)[-1]
        self._rms = lib.ek_rms_norm
        self._rms.argtypes = [_P, _P, _P, _I, _I, _F, _I]
        self._add_rms = lib.ek_add_rms_norm
        self._add_rms.argtypes = [_P, _P, _P, _P, _I, _I, _F, _I]
        self._silu_mul = lib.ek_silu_mul
        self._silu_mul.argtypes = [_P, _P, _I, _I, _I]
        self._attention = lib.ek_attention
        self._attention.argtypes = [_P, _I, _I, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _F, _P, _I]
        self._linear = lib.ek_linear
        self._linear.argtypes = [_P, _P, _I, _P, _P, _I, _I, _I, _I]
        self._forward = lib.ek_forward
        self._forward.argtypes = [_P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I, _P, _P, _P, _I, _I, _P, _P, _I,
                                  _I, _I, _I, _I, _F, _F, _I]
        for fn in (self._rms, self._add_rms, self._silu_mul, self._attention, self._linear, self._forward):
            fn.restype = None

    @staticmethod
    def pack_weight(weight: torch.Tensor) -> torch.Tensor | None:
        """``weight`` (out, in) in the panel layout :meth:`linear` reads, (out / 16, in, 16) flattened, in its own
        dtype (one of WEIGHT_TYPES); None where it does not fit (out features not a multiple of 16, another
        dtype)."""
        n, k = weight.shape
        if n % PANEL or weight.dtype not in WEIGHT_TYPES or weight.device.type != "cpu":
            return None
        # detach: a packed copy of a parameter must not keep the parameter alive through an autograd graph.
        return weight.detach().reshape(n // PANEL, PANEL, k).transpose(1, 2).contiguous().view(-1)

    def linear(self, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int,
               threads: int) -> torch.Tensor:
        """``x @ W.T + bias`` for fp32 ``x`` of a multiple of 4 rows (decode's padded batch), in fp32 whatever the
        packed weight's dtype."""
        rows, k = x.shape
        y = x.new_empty((rows, out_features))
        self._linear(_ptr(x), _ptr(packed, tuple(WEIGHT_TYPES)), WEIGHT_TYPES[packed.dtype], _ptr(bias),
                     y.data_ptr(), rows, out_features, k, threads)
        return y

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor,
                 threads: int = 1) -> torch.Tensor:
        rows, dim = x.shape
        self._rms(x.data_ptr(), weight.data_ptr(), out.data_ptr(), rows, dim, eps, threads)
        return out

    def add_rms_norm(self, x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                     out: torch.Tensor, threads: int = 1) -> torch.Tensor:
        """``x += delta`` in place, then ``out = rms_norm(x) * weight``."""
        rows, dim = x.shape
        self._add_rms(x.data_ptr(), delta.data_ptr(), weight.data_ptr(), out.data_ptr(), rows, dim, eps, threads)
        return out

    def silu_mul(self, gate_up: torch.Tensor, out: torch.Tensor, threads: int) -> torch.Tensor:
        rows, ffn = out.shape
        self._silu_mul(gate_up.data_ptr(), out.data_ptr(), rows, ffn, threads)
        return out

    def attention(self, qkv: torch.Tensor, real_rows: int, positions: torch.Tensor, slots: torch.Tensor,
                         cos: torch.Tensor, signed_sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         num_heads: int, scale: float, out: torch.Tensor, threads: int, *,
                         block_tables: torch.Tensor | None = None) -> torch.Tensor:
        """Caches are (blocks, kv heads, block, head_dim), slot ``s`` holding blocks ``block_tables[s]`` (int32);
        without tables, one block per slot (a contiguous cache of ``block`` positions per slot)."""
        _, num_kv_heads, block, head_dim = k_cache.shape
        tables = _tables(block_tables, k_cache.shape[0])
        self._attention(
            qkv.data_ptr(), qkv.shape[0], real_rows, positions.data_ptr(), slots.data_ptr(), cos.data_ptr(),
            signed_sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), _ptr(tables, (torch.int32,)),
            tables.shape[1], block, num_heads, num_kv_heads, head_dim, scale, out.data_ptr(), threads,
        )
        return out

    def forward(self, table: ctypes.Array, final_norm: torch.Tensor, x: torch.Tensor, real_rows: int,
                positions: torch.Tensor, slots: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor,
                block: int, num_heads: int, num_kv_heads: int, head_dim: int, ffn: int, eps: float, scale: float,
                threads: int, *, block_tables: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder stack over ``x`` (rows, hidden) of embeddings (a multiple of 4 rows; updated in place to
        the residual stream): returns the final-normed hidden states. One call, with the GIL released throughout
        (ctypes releases it for every foreign call). The layers' caches are (blocks, kv heads, ``block``,
        head_dim), slot ``s`` holding blocks ``block_tables[s]``; without tables, block ``s`` is slot ``s``."""
        rows, hidden = x.shape
        h = torch.empty_like(x)
        qkv = x.new_empty((rows, (num_heads + 2 * num_kv_heads) * head_dim))
        attn = x.new_empty((rows, num_heads * head_dim))
        delta = torch.empty_like(x)
        gu = x.new_empty((rows, 2 * ffn))
        act = x.new_empty((rows, ffn))
        tables = _tables(block_tables, int(slots.max()) + 1 if len(slots) else 1)
        self._forward(
            ctypes.addressof(table), len(table), _ptr(final_norm), _ptr(x), h.data_ptr(), qkv.data_ptr(),
            attn.data_ptr(), delta.data_ptr(), gu.data_ptr(), act.data_ptr(), rows, real_rows,
            positions.data_ptr(), slots.data_ptr(), _ptr(tables, (torch.int32,)), tables.shape[1], block, _ptr(cos),
            _ptr(signed_sin), num_heads, num_kv_heads, head_dim, hidden, ffn, eps, scale, threads,
        )
        return h


def _tables(block_tables: torch.Tensor | None, slots: int) -> torch.Tensor:
    """The block tables a kernel reads: the given ones, or one block per slot (block ``s`` is slot ``s``)."""
    if block_tables is not None:
        return block_tables
    return torch.arange(slots, dtype=torch.int32)[:, None].contiguous()


_loaded: NativeKernels | None = None


def load() -> NativeKernels:
    """The kernels, built if needed (raises NativeBuildError when that is impossible)."""
    global _loaded
    if _loaded is None:
        path = build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeBuildError(f"cannot load {path}: {exc}") from exc
        _loaded = NativeKernels(lib, path)
    return _loaded


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.engine.native [--all]``: build ahead of time (bootstrap; the image builds every ISA,
    since the machine that builds it is not the one that runs it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runtime.engine.native",
                                     description="Build the runtime's native CPU kernels ahead of first use.")
    parser.add_argument("--all", action="store_true", help=f"build for every ISA ({', '.join(ISA_FLAGS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        for isa in ISA_FLAGS if args.all else [host_isa()]:
            print(build(isa))  # noqa: T201 - the paths are this command's output
    except NativeBuildError as exc:
        log.error("%s", exc)
        return 1
    return 0
