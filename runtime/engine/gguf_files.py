"""GGUF repositories: which file to serve, whether this runtime can read it, and the one dequantizing load path.

Hugging Face Inference Endpoints serves a repository of ``.gguf`` files with llama.cpp; we serve it with our own
engine instead, dequantized at load time. Both the runtime (``runtime/engine/loader.py``) and the snapshot builder
(:func:`convert_to_snapshot`, behind ``endpointctl dev model``) go through :func:`load_gguf_causal_lm`, so a GGUF
served directly and the snapshot built from it hold the same weights, bit for bit.

Which repositories are GGUF ones: ``GGUF_FILE`` names a file in the repository, or the repository holds ``.gguf``
files and no ``config.json``. A transformers snapshot that also carries GGUF files is served from the snapshot:
its weights are the unquantized ones.

Which file, when ``GGUF_FILE`` is unset: the best quantization the file names announce (llama.cpp's naming:
``model-Q4_K_M.gguf``, ``Model.F16.gguf``), in :data:`QUANT_PREFERENCE` order — unquantized floats first (F32 >
BF16 > F16), then by bits per weight, most first (Q8_0 > Q6_K > Q5_K_M > ... > IQ1_S). Names are what a Hub
repository can be ranked by without downloading every file, so local directories are ranked the same way. A file
whose name says nothing ranks last; two files tied for the best are an error asking for ``GGUF_FILE``.

Before transformers reads a byte of tensor data, :func:`check_gguf_file` reads the header (magic, version, the
tensors' types) with a small reader of our own: ``gguf.GGUFReader`` builds a numpy view per metadata item, seconds
for a 49k-token vocabulary, where this takes milliseconds. A file that is not GGUF, or holds a tensor type gguf-py
cannot dequantize, is then a one-line :class:`GGUFError` at start-up instead of a traceback halfway through.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runtime.errors import ModelLoadError

# Most precise first. K-quant "mixes" (_M/_S/_L) rank inside their family by how many tensors they keep wider.
QUANT_PREFERENCE: tuple[str, ...] = (
    "F32", "BF16", "F16",
    "Q8_0",
    "Q6_K",
    "Q5_K_L", "Q5_K_M", "Q5_K", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_L", "Q4_K_M", "Q4_K", "Q4_K_S", "Q4_1", "IQ4_XS", "IQ4_NL", "Q4_0", "MXFP4",
    "Q3_K_XL", "Q3_K_L", "Q3_K_M", "Q3_K", "IQ3_M", "IQ3_S", "Q3_K_S", "IQ3_XS", "IQ3_XXS",
    "Q2_K_L", "Q2_K", "IQ2_M", "IQ2_S", "Q2_K_S", "IQ2_XS", "IQ2_XXS", "TQ2_0",
    "IQ1_M", "TQ1_0", "IQ1_S",
)
_QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(BF16|F32|F16|IQ\d_[A-Z]+|Q\d_K_[A-Z]+|Q\d_K|Q\d_\d|TQ\d_0|MXFP4)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SPLIT_PART = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # version 1 (mid-2023 and before) used 32-bit counts; llama.cpp itself no longer reads it


class GGUFError(ModelLoadError):
    """A GGUF repository or file this runtime cannot serve; the message is the whole story, on one line."""


@dataclass(frozen=True)
class GGUFChoice:
    """The file to load from a repository: ``filename`` relative to it (what ``from_pretrained`` takes)."""

    filename: str
    reason: str  # "GGUF_FILE" | "the only .gguf file" | "best quantization of N files (Q8_0)"


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    architecture: str | None
    tensor_types: dict[str, str]  # tensor name -> ggml type name (unknown ids as "type 42")


def quant_of(filename: str) -> str | None:
    """The quantization a file name announces (upper-case), or None."""
    matches = _QUANT_IN_NAME.findall(PurePosixPath(filename).name)
    return matches[-1].upper() if matches else None


def _rank(filename: str) -> int:
    quant = quant_of(filename)
    return QUANT_PREFERENCE.index(quant) if quant in QUANT_PREFERENCE else len(QUANT_PREFERENCE)


def choose_gguf(filenames: list[str]) -> GGUFChoice:
    """Pick the file to serve among a repository's ``.gguf`` files (see the module docstring for the order)."""
    candidates = sorted(f for f in filenames if f.lower().endswith(".gguf"))
    if not candidates:
        raise GGUFError("the repository holds no .gguf file")
    if len(candidates) == 1:
        return GGUFChoice(candidates[0], "the only .gguf file")
    # Only the first part of a split file can be chosen (and is then refused by check_gguf_file, naming it).
    candidates = [f for f in candidates if not _SPLIT_PART.search(f) or "-00001-of-" in f]
    best = min(_rank(f) for f in candidates)
    top = [f for f in candidates if _rank(f) == best]
    if len(top) > 1:
        raise GGUFError(f"{len(top)} .gguf files are equally good candidates ({', '.join(top[:4])}"
                        f"{', ...' if len(top) > 4 else ''}): set GGUF_FILE to the one to serve")
    quant = quant_of(top[0]) or "no quantization in its name"
    return GGUFChoice(top[0], f"best quantization of {len(candidates)} .gguf files ({quant})")


def _check_relative(filename: str) -> None:
    path = PurePosixPath(filename)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise GGUFError(f"GGUF_FILE must name a file inside the repository (a relative path), not {filename!r}")


def _repo_files(model_id: str, *, revision: str | None, token: str | None) -> list[str]:
    if os.path.isdir(model_id):
        root = Path(model_id)
        return sorted(str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()
                      and ".git" not in p.relative_to(root).parts)
    from huggingface_hub import list_repo_files

    return list_repo_files(model_id, revision=revision, token=token)


def find_gguf(model_id: str, *, gguf_file: str | None, revision: str | None, token: str | None) -> GGUFChoice | None:
    """The GGUF file to serve from ``model_id`` (a local directory or a Hub repo id), or None for a transformers
    snapshot. A Hub repository is only listed when it could be a GGUF one (no local directory of that name)."""
    if gguf_file:
        _check_relative(gguf_file)
        if os.path.isdir(model_id) and not (Path(model_id) / gguf_file).is_file():
            raise GGUFError(f"GGUF_FILE {gguf_file!r} is not a file in {model_id}")
        return GGUFChoice(gguf_file, "GGUF_FILE")
    if os.path.isdir(model_id):
        if (Path(model_id) / "config.json").exists():
            return None
        files = _repo_files(model_id, revision=revision, token=token)
    elif os.path.exists(model_id) or model_id.startswith(("/", ".", "~")):
        return None  # a missing or odd local path: the normal loader's own error says it best
    else:
        try:
            files = _repo_files(model_id, revision=revision, token=token)
        except Exception:  # noqa: BLE001 - unreachable Hub, private repo...: the normal loader reports it
            return None
        if "config.json" in files:
            return None
    if not any(f.lower().endswith(".gguf") for f in files):
        return None
    return choose_gguf(files)


# -- the header ---------------------------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, buf) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise struct.error("string runs past the end")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_value(self, vtype: int) -> None:
        if vtype == _STRING:
            self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        elif vtype == _ARRAY:
            item_type, count = self.take("<I"), self.take("<Q")
            if item_type in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[item_type])
            else:
                for _ in range(count):
                    self.skip_value(item_type)
        elif vtype in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[vtype])
        else:
            raise struct.error(f"unknown metadata value type {vtype}")
        if self.pos > len(self.buf):
            raise struct.error("value runs past the end")


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Magic, version, architecture and every tensor's type, without touching tensor data."""
    from gguf import GGMLQuantizationType

    name = Path(path).name
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 24:
                raise GGUFError(f"{name} is not a GGUF file ({size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf[:4] != GGUF_MAGIC:
                    raise GGUFError(f"{name} is not a GGUF file (it starts with {bytes(buf[:4])!r}, not b'GGUF')")
                cur = _Cursor(buf)
                cur.pos = 4
                version = cur.take("<I")
                if version not in GGUF_VERSIONS:
                    raise GGUFError(f"{name} is GGUF version {version}; this runtime reads versions "
                                    f"{' and '.join(map(str, GGUF_VERSIONS))}")
                n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
                architecture = None
                for _ in range(n_kv):
                    key, vtype = cur.string(), cur.take("<I")
                    if key == "general.architecture" and vtype == _STRING:
                        architecture = cur.string()
                    else:
                        cur.skip_value(vtype)
                types: dict[str, str] = {}
                for _ in range(n_tensors):
                    tensor = cur.string()
                    n_dims = cur.take("<I")
                    cur.pos += 8 * n_dims
                    type_id = cur.take("<I")
                    cur.pos += 8  # data offset
                    try:
                        types[tensor] = GGMLQuantizationType(type_id).name
                    except ValueError:
                        types[tensor] = f"type {type_id}"
    except struct.error as exc:
        raise GGUFError(f"{name} is not a complete GGUF file (its header is cut short: {exc})") from None
    except OSError as exc:
        raise GGUFError(f"cannot read {name}: {exc.strerror or exc}") from None
    return GGUFHeader(version=version, architecture=architecture, tensor_types=types)


def dequantizable_types() -> frozenset[str]:
    """The ggml tensor types gguf-py (which transformers dequantizes with) can turn into floats: probed with one
    zero block each, so a gguf upgrade that adds a type needs no change here."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    names = set()
    for qtype in GGMLQuantizationType:
        _block, type_size = GGML_QUANT_SIZES[qtype]
        try:
            dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
        except (NotImplementedError, ValueError, TypeError):
            continue
        names.add(qtype.name)
    return frozenset(names)


def check_gguf_file(path: str | Path) -> GGUFHeader:
    """Refuse, in one line, a file this runtime cannot load: not GGUF, a split part, an unreadable tensor type."""
    name = Path(path).name
    if _SPLIT_PART.search(name):
        raise GGUFError(f"{name} is one part of a split GGUF file, which transformers cannot load; merge the parts "
                        f"(llama.cpp's `llama-gguf-split --merge`) and serve the merged file")
    header = read_gguf_header(path)
    supported = dequantizable_types()
    bad: dict[str, list[str]] = {}
    for tensor, qtype in header.tensor_types.items():
        if qtype not in supported:
            bad.setdefault(qtype, []).append(tensor)
    if bad:
        kinds = ", ".join(f"{qtype} ({len(names)} tensor{'s' if len(names) > 1 else ''}, e.g. {names[0]})"
                          for qtype, names in sorted(bad.items()))
        raise GGUFError(f"{name} holds tensors of a quantization type this runtime cannot dequantize: {kinds}; "
                        f"pick another quantization of the model (GGUF_FILE)")
    return header


# -- loading ------------------------------------------------------------------------------------------------


def resolve_gguf_path(model_id: str, filename: str, *, revision: str | None, token: str | None) -> Path:
    """The file on local disk: inside a local repository, or downloaded from the Hub (the HF cache, as
    ``from_pretrained`` would)."""
    if os.path.isdir(model_id):
        return Path(model_id) / filename
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(model_id, filename, revision=revision, token=token))


def load_gguf_causal_lm(model_id: str, filename: str, *, revision: str | None, token: str | None, dtype, device=None):
    """(config, tokenizer, model) from a GGUF file: checked first (one-line errors), then dequantized by
    transformers (gguf-py's numpy dequantization to fp32, then cast to ``dtype``).

    ``GgufConfig(dequantize=True)`` is explicit: with the optional ``kernels`` package installed transformers would
    otherwise keep the weights in GGUF blocks behind its own linear layers, which our lean forward cannot read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = resolve_gguf_path(model_id, filename, revision=revision, token=token)
    check_gguf_file(path)
    directory, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, config=config, dtype=dtype,
            quantization_config=GgufConfig(dequantize=True),
        )
    except (ValueError, NotImplementedError, KeyError) as exc:
        # transformers' own refusals (an architecture it has no GGUF mapping for, a tokenizer model it cannot
        # convert) are one line already; keep them so, naming the file.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GGUFError(f"{name}: {first_line}") from exc
    model.eval()
    if device is not None:
        model = model.to(device)
    return config, tokenizer, model


def convert_to_snapshot(gguf_path: str | Path, out: str | Path, *, progress=None) -> Path:
    """Write the GGUF model at ``gguf_path`` to ``out`` as a plain transformers snapshot, in float32.

    ``save_pretrained`` refuses a model that still carries the GGUF quantization marker, so the model is built again
    from its config *without* ``quantization_config`` and given the dequantized state dict (every key must match),
    then saved as safetensors with the tokenizer (its chat template included) and the generation config.

    Why float32: dequantizing GGUF blocks gives fp32 values (``scale * q + min`` with fp16 scales) that bf16 cannot
    hold — a bf16 snapshot would round the already-quantized weights a second time — while fp32 keeps exactly the
    weights the GGUF file describes, and the runtime's fastest CPU path (the native kernels) runs fp32. The
    runtime's ``DTYPE=bfloat16`` / ``float16`` still casts this snapshot at load for those who want half the memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    say = progress or (lambda _text: None)
    gguf_path = Path(gguf_path)
    out = Path(out)
    say(f"dequantizing {gguf_path.name} with transformers (gguf-py)")
    config, tokenizer, quantized = load_gguf_causal_lm(
        str(gguf_path.parent), gguf_path.name, revision=None, token=None, dtype=torch.float32
    )
    plain_config = config.__class__.from_dict(
        {k: v for k, v in config.to_dict().items() if k not in ("quantization_config", "_model_name_or_path")}
    )
    plain_config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)  # every key, both ways, or a RuntimeError
    model.generation_config = quantized.generation_config
    model.eval()
    del quantized
    tokenizer.model_max_length = getattr(plain_config, "max_position_embeddings", None) or tokenizer.model_max_length
    say(f"writing the snapshot ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, float32)")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
