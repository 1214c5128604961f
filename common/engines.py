"""The inference engines a `model.image` variant names, as wire facts both sides need: which settings each variant
takes, the port it listens on by default, and which repositories are GGUF ones.

The API validates a variant's fields against `ENGINES` (an unknown one is a 422 naming it: the hosted API drops
what a variant does not declare, silently, which is how a `tensorParallelSize` on a TGI image goes unnoticed);
the worker renders each engine's container from the same table (`worker/engines.py`). It lives in `common/`
because the control plane never imports the worker.

Where the settings come from:
- every variant: `url`, `port`, `healthRoute` (huggingface_hub's `custom_image` docs);
- `tensorParallelSize` on vLLM and SGLang, `dataParallelSize` on vLLM (huggingface_hub 2.4,
  `_TENSOR_PARALLEL_IMAGE_KEYS` / `_DATA_PARALLEL_IMAGE_KEYS`);
- vLLM `maxNumSeqs`, `maxNumBatchedTokens`, `kvCacheDtype`; TGI `maxInputLength`, `maxTotalTokens`,
  `maxBatchPrefillTokens`, `maxBatchTotalTokens`, `quantize`; llama.cpp `ctxSize` (tokens per request), `nParallel`
  (concurrent requests), `threadsHttp`, `embeddings`, `modelPath` (the GGUF file); TEI `maxBatchTokens`,
  `maxConcurrentRequests`, `pooling` (the Inference Endpoints engine pages and the settings the API reserves);
- `credentials` on `custom` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

COMMON_SETTINGS = frozenset({"url", "port", "healthRoute"})


@dataclass(frozen=True)
class EngineInfo:
    """One engine as the wire sees it. `kind` groups variants that render alike (`tgiNeuron` is TGI's image)."""

    kind: str  # runtime | tgi | tei | vllm | sglang | llamacpp | custom
    label: str  # how status messages and docs name it
    default_port: int
    settings: frozenset[str]  # beyond COMMON_SETTINGS


_TGI = frozenset({"maxInputLength", "maxTotalTokens", "maxBatchPrefillTokens", "maxBatchTotalTokens", "quantize"})
_VLLM = frozenset({"tensorParallelSize", "dataParallelSize", "maxNumSeqs", "maxNumBatchedTokens", "kvCacheDtype"})

ENGINES: dict[str, EngineInfo] = {
    # The bundled runtime stands in for Hugging Face's own default images.
    "huggingface": EngineInfo("runtime", "endpointctl runtime", 80, frozenset()),
    "huggingfaceNeuron": EngineInfo("runtime", "endpointctl runtime", 80, frozenset()),
    "hfServe": EngineInfo("runtime", "endpointctl runtime", 80, frozenset()),
    "custom": EngineInfo("custom", "custom image", 80, frozenset({"credentials"})),
    "tgi": EngineInfo("tgi", "TGI", 80, _TGI),
    "tgiNeuron": EngineInfo("tgi", "TGI", 80, _TGI),
    "tei": EngineInfo("tei", "TEI", 80, frozenset({"maxBatchTokens", "maxConcurrentRequests", "pooling"})),
    "vLLM": EngineInfo("vllm", "vLLM", 8000, _VLLM),
    "vLLMNeuron": EngineInfo("vllm", "vLLM", 8000, _VLLM),
    "sGLang": EngineInfo("sglang", "SGLang", 30000, frozenset({"tensorParallelSize"})),
    "llamacpp": EngineInfo("llamacpp", "llama.cpp", 8080,
                           frozenset({"ctxSize", "nParallel", "threadsHttp", "embeddings", "modelPath"})),
}
IMAGE_VARIANTS = tuple(ENGINES)

# Enumerated values are passed to an engine as arguments: only the ones its documentation lists.
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e5m2", "fp8_e4m3")  # Inference Endpoints' vLLM page
TGI_QUANTIZE = ("awq", "compressed-tensors", "eetq", "exl2", "gptq", "marlin", "bitsandbytes", "bitsandbytes-nf4",
                "bitsandbytes-fp4", "fp8")  # text-generation-launcher --quantize
TEI_POOLING = ("cls", "mean", "splade", "last-token")  # text-embeddings-router --pooling

GGUF_FILE_ENV = "GGUF_FILE"  # the bundled runtime's variable naming the file of a GGUF repository
_GGUF_NAME = re.compile(r"gguf$", re.IGNORECASE)


def engine_info(variant: str) -> EngineInfo:
    """The variant's engine; an unknown variant (a row written around the API) is a custom image's."""
    return ENGINES.get(variant, ENGINES["custom"])


def unknown_settings(variant: str, fields: set[str] | frozenset[str]) -> list[str]:
    """The fields a variant does not document, sorted (the API names the first in its 422)."""
    allowed = COMMON_SETTINGS | engine_info(variant).settings
    return sorted(f for f in fields if f not in allowed)


def gguf_model_path(value: str) -> str | None:
    """Why a `modelPath` cannot be used, or None: a `.gguf` file inside the downloaded snapshot (relative, or under
    `/repository/`), so it can neither leave the model volume nor be read as a flag by the engine."""
    path = PurePosixPath(value.removeprefix("/repository/"))
    if path.is_absolute() or ".." in path.parts or not value.lower().endswith(".gguf"):
        return "must be a .gguf file inside the repository (e.g. model-Q4_K_M.gguf)"
    if value.startswith("-") or any(ord(c) < 32 for c in value):
        return "must be a plain file name"
    return None


def is_gguf_repository(repository: str, env: dict[str, str]) -> bool:
    """Whether a repository with the default image is a GGUF one, from what the worker knows without listing the
    repository: the endpoint names the file (`GGUF_FILE`), or the repository's name ends in GGUF, as the Hub's
    quantizers name theirs (`TheBloke/Llama-2-7B-GGUF`, `unsloth/Qwen3-8B-GGUF`)."""
    return bool(env.get(GGUF_FILE_ENV)) or bool(_GGUF_NAME.search(repository.rstrip("/")))
