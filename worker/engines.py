"""What each inference engine needs to run one endpoint, as data and pure functions: the image, the command line or
environment its own documentation asks for, the port, the health and metrics routes, `/dev/shm`, how long it may
take to start; and the metric names the autoscaler and the charts read from each engine.

The Kubernetes provider renders a container from an `EngineRun` (`providers/kubernetes/manifests.py`); the local
provider runs only the bundled runtime and refuses the engines that exist only as images. Nothing here does I/O or
imports kubernetes, so every variant's rendering is unit-tested as a value.

Per engine (flags from each engine's own reference):
- bundled runtime and TGI: TGI's variables (`MODEL_ID=/repository`, `PORT`, `HOSTNAME`, `NUM_SHARD`,
  `MAX_INPUT_TOKENS`, `MAX_TOTAL_TOKENS`, `MAX_BATCH_PREFILL_TOKENS`, `MAX_BATCH_TOTAL_TOKENS`, `QUANTIZE`), the
  image's own entrypoint. A custom image gets the same variables, which TGI-compatible images understand.
- vLLM: `vllm serve /repository --served-model-name <repo> tgi dummy --host 0.0.0.0 --port …
  --tensor-parallel-size …`
  (+ `--data-parallel-size`, `--max-model-len` from MAX_TOTAL_TOKENS, `--max-num-seqs`, `--max-num-batched-tokens`,
  `--kv-cache-dtype`). vLLM refuses a model name it does not serve, and clients of an endpoint URL do not know the
  repository: huggingface_hub's InferenceClient sends `dummy` (older releases sent `tgi`), the dashboard's playground
  sends `tgi`; so both are served names too (tests/worker/test_vllm_live.py).
- SGLang: `python3 -m sglang.launch_server --model-path /repository --tp … --enable-metrics` (+ `--context-length`).
- llama.cpp: `llama-server -m /repository/<file> --metrics --alias <repo>` (+ `-ngl 999` on a GPU,
  `--ctx-size` = ctxSize × nParallel because llama.cpp divides its context among its slots, `--parallel`,
  `--threads-http`, `--embeddings`). The file is the variant's `modelPath`, else `GGUF_FILE`; the API requires one,
  because on a cluster the worker cannot list the repository to choose.
- TEI: `text-embeddings-router --model-id /repository` (+ `--max-batch-tokens`, `--max-concurrent-requests`,
  `--pooling`); its router serves `/metrics` on the serving port too (router/src/http/server.rs), which is
  the one read: its separate Prometheus listener (`--prometheus-port`, 9000) is not started by every release.

Tensor parallelism defaults to the instance's accelerators, as on Inference Endpoints. vLLM and SGLang share tensors
between GPU workers through `/dev/shm` (NCCL, their multiprocessing): they get 1 GiB per GPU, at least the operator's
`shm_size`; TGI and the runtime keep the operator's size; llama.cpp and TEI are single processes and get none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from common.engines import GGUF_FILE_ENV, EngineInfo, engine_info, is_gguf_repository
from worker.providers.base import DesiredDeployment

REPOSITORY_PATH = "/repository"
# What clients of an endpoint URL send as `model` (see the module docstring), served by engines that check it.
URL_CLIENT_MODEL_NAMES = ("tgi", "dummy")
GIB = 1024 ** 3

# Images for a variant sent without a `url` (operators override them with ENDPOINTCTL_K8S_ENGINE_IMAGES).
DEFAULT_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v0.23.0",
    "sglang": "lmsysorg/sglang:v0.5.6",
    "llamacpp": "ghcr.io/ggml-org/llama.cpp:server-cuda",
    "llamacpp-cpu": "ghcr.io/ggml-org/llama.cpp:server",
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.3.6",
    "tei": "ghcr.io/huggingface/text-embeddings-inference:1.8",
    "tei-cpu": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8",
}

# Share of the operator's startup timeout each engine may take to answer its health route. vLLM and SGLang compile
# and capture CUDA graphs after loading; the runtime and TGI warm up; llama.cpp maps one file; TEI loads small models.
STARTUP_SHARE = {"runtime": 1.0, "custom": 1.0, "tgi": 1.0, "vllm": 1.0, "sglang": 1.0, "llamacpp": 0.5, "tei": 0.25}
MIN_STARTUP_SECONDS = 300


@dataclass(frozen=True)
class EngineRun:
    """One engine's container, independent of how a provider runs it."""

    kind: str  # common.engines.EngineInfo.kind
    label: str
    image: str
    port: int
    command: list[str] | None  # None: the image's entrypoint
    args: list[str]
    env: dict[str, str]
    health_path: str
    metrics_path: str | None
    metrics_port: int
    shm_bytes: int | None  # None: no /dev/shm mount
    startup_seconds: int
    gguf: bool = False  # the runtime serving a GGUF repository (it dequantizes at load time)

    def describe(self) -> str:
        """For status messages: the engine and the image, never the arguments (they may carry tenant values)."""
        return f"{self.label} {self.image}" + (" (GGUF)" if self.gguf else "")


def _variant(desired: DesiredDeployment) -> tuple[str, dict]:
    if not desired.image:
        return "huggingface", {}
    name, settings = next(iter(desired.image.items()))
    return name, dict(settings or {}) if isinstance(settings, dict) else {}


def parse_quantity(value: str) -> int | None:
    """Bytes of a Kubernetes quantity such as `1Gi` or `512Mi` (binary suffixes and plain bytes), else None."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", value.strip())
    if not m:
        return None
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024 ** 2, "Gi": GIB, "Ti": 1024 ** 4}[m.group(2)]


def _gguf_file(settings: dict, env: Mapping[str, str]) -> str | None:
    path = settings.get("modelPath") or env.get(GGUF_FILE_ENV)
    return str(path).removeprefix(f"{REPOSITORY_PATH}/") if path else None


def select_engine(desired: DesiredDeployment, *, gguf_image: str | None = None) -> tuple[EngineInfo, dict, str | None]:
    """The engine that runs `desired`, its variant settings and, where the operator made llama.cpp the GGUF default,
    that image. A GGUF repository with the default image runs llama.cpp only when the file is known (`GGUF_FILE`):
    llama.cpp serves one named file, while the runtime picks the best quantization itself."""
    name, settings = _variant(desired)
    info = engine_info(name)
    if (gguf_image and name == "huggingface" and not settings.get("url")
            and is_gguf_repository(desired.repository, desired.env) and desired.env.get(GGUF_FILE_ENV)):
        return engine_info("llamacpp"), {k: v for k, v in settings.items() if k in ("port", "healthRoute")}, gguf_image
    return info, settings, None


def engine_run(desired: DesiredDeployment, *, runtime_image: str, engine_images: Mapping[str, str] | None = None,
               gguf_image: str | None = None, shm_size: str = "1Gi", startup_timeout_seconds: int = 1800) -> EngineRun:
    """Render what `desired`'s engine needs. Raises ValueError for a spec no engine can run (a custom image without a
    `url`, llama.cpp without a GGUF file), which the provider reports as a permanent error."""
    info, settings, gguf_default = select_engine(desired, gguf_image=gguf_image)
    images = {**DEFAULT_IMAGES, **(engine_images or {})}
    gpus = desired.hardware.num_accelerators if desired.hardware.accelerator == "gpu" else 0
    url = settings.get("url")
    kind = info.kind
    if kind == "custom" and not url:
        raise ValueError("a custom image needs a `url`")
    if gguf_default:
        image = gguf_default
    elif url:
        image = str(url)
    elif kind in ("runtime", "custom"):
        image = runtime_image
    elif kind in ("llamacpp", "tei") and not gpus:
        image = images[f"{kind}-cpu"]
    else:
        image = images[kind]
    port = desired.port
    operator_shm = parse_quantity(shm_size) or GIB
    base_env = {"HF_HUB_OFFLINE": "1", "HOME": "/tmp"}
    command: list[str] | None = None
    args: list[str] = []
    env: dict[str, str]
    shm: int | None = operator_shm
    metrics_path: str | None = "/metrics"
    metrics_port = port
    max_total = desired.env.get("MAX_TOTAL_TOKENS")
    served = desired.repository

    if kind in ("runtime", "custom", "tgi"):
        env = {
            # TGI's variable names, understood by the bundled runtime and TGI-compatible custom images alike.
            "MODEL_ID": REPOSITORY_PATH, "PORT": str(port), "HOSTNAME": "0.0.0.0", **base_env,
            **({"NUM_SHARD": str(gpus)} if gpus > 1 else {}),
            **({"TASK": desired.task} if desired.task else {}),
        }
        for field, var in (("maxInputLength", "MAX_INPUT_TOKENS"), ("maxTotalTokens", "MAX_TOTAL_TOKENS"),
                           ("maxBatchPrefillTokens", "MAX_BATCH_PREFILL_TOKENS"),
                           ("maxBatchTotalTokens", "MAX_BATCH_TOTAL_TOKENS"), ("quantize", "QUANTIZE")):
            if settings.get(field) is not None:
                env[var] = str(settings[field])
        if kind == "custom":
            metrics_path = None  # a tenant image exports what it likes; the sampler tries /metrics anyway
    elif kind == "vllm":
        tp = int(settings.get("tensorParallelSize") or max(gpus, 1))
        dp = int(settings.get("dataParallelSize") or 1)
        command = ["vllm", "serve"]
        args = [REPOSITORY_PATH, "--served-model-name", served, *URL_CLIENT_MODEL_NAMES, "--host", "0.0.0.0",
                "--port", str(port), "--tensor-parallel-size", str(tp)]
        if dp > 1:
            args += ["--data-parallel-size", str(dp)]
        if max_total:
            args += ["--max-model-len", max_total]
        for field, flag in (("maxNumSeqs", "--max-num-seqs"), ("maxNumBatchedTokens", "--max-num-batched-tokens"),
                            ("kvCacheDtype", "--kv-cache-dtype")):
            if settings.get(field) is not None:
                args += [flag, str(settings[field])]
        env = dict(base_env)
        shm = max(operator_shm, GIB * tp * dp)
    elif kind == "sglang":
        tp = int(settings.get("tensorParallelSize") or max(gpus, 1))
        command = ["python3", "-m", "sglang.launch_server"]
        args = ["--model-path", REPOSITORY_PATH, "--served-model-name", served, "--host", "0.0.0.0",
                "--port", str(port), "--tp", str(tp), "--enable-metrics"]
        if max_total:
            args += ["--context-length", max_total]
        env = dict(base_env)
        shm = max(operator_shm, GIB * tp)
    elif kind == "llamacpp":
        gguf = _gguf_file(settings, desired.env)
        if not gguf:
            raise ValueError("llama.cpp needs the GGUF file: set model.image.llamacpp.modelPath or GGUF_FILE")
        n_parallel = int(settings.get("nParallel") or 1)
        args = ["-m", f"{REPOSITORY_PATH}/{gguf}", "--host", "0.0.0.0", "--port", str(port), "--alias", served,
                "--metrics"]
        if gpus:
            args += ["-ngl", "999"]  # every layer on the GPU
        ctx = settings.get("ctxSize")
        if ctx is not None:
            args += ["--ctx-size", str(int(ctx) * n_parallel)]
        elif max_total:
            args += ["--ctx-size", str(int(max_total) * n_parallel)]
        if settings.get("nParallel") is not None:
            args += ["--parallel", str(n_parallel)]
        if settings.get("threadsHttp") is not None:
            args += ["--threads-http", str(settings["threadsHttp"])]
        if settings.get("embeddings"):
            args += ["--embeddings"]
        env = dict(base_env)
        shm = None
    else:  # tei
        args = ["--model-id", REPOSITORY_PATH, "--hostname", "0.0.0.0", "--port", str(port)]
        for field, flag in (("maxBatchTokens", "--max-batch-tokens"),
                            ("maxConcurrentRequests", "--max-concurrent-requests"), ("pooling", "--pooling")):
            if settings.get(field) is not None:
                args += [flag, str(settings[field])]
        env = dict(base_env)
        shm = None

    env.update(desired.env)  # the endpoint's own variables last: engines read their tuning knobs from the env
    if desired.command:
        command = list(desired.command)
    args += list(desired.args or [])  # extra engine arguments, after ours (Inference Endpoints' "container arguments")
    startup = max(MIN_STARTUP_SECONDS, int(startup_timeout_seconds * STARTUP_SHARE[kind]))
    return EngineRun(kind=kind, label=info.label, image=image, port=port, command=command, args=args, env=env,
                     health_path=desired.health_route, metrics_path=metrics_path, metrics_port=metrics_port,
                     shm_bytes=shm, startup_seconds=startup,
                     gguf=kind == "runtime" and is_gguf_repository(desired.repository, desired.env))


# --- metrics ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineMetrics:
    """The Prometheus names one engine exports for what the autoscaler and the charts read. Families are named as
    prometheus_client's parser names them (a counter without its `_total`); `requests` and `tokens` are (family,
    sample suffix) of a cumulative count."""

    engine: str
    pending: tuple[str, ...]  # gauges whose sum is the replica's queued + running requests
    requests: tuple[str, str] | None
    tokens: tuple[str, str] | None
    ttft: str | None  # histogram of time to first token
    latency: str | None  # histogram of end-to-end request latency


# First match wins: the bundled runtime exports vLLM's names. Sources: tests/data/engine_metrics/README.md.
ENGINE_METRICS: tuple[EngineMetrics, ...] = (
    EngineMetrics("vLLM", pending=("vllm:num_requests_waiting", "vllm:num_requests_running"),
                  requests=("vllm:e2e_request_latency_seconds", "count"), tokens=("vllm:generation_tokens", "total"),
                  ttft="vllm:time_to_first_token_seconds", latency="vllm:e2e_request_latency_seconds"),
    EngineMetrics("TGI", pending=("tgi_queue_size", "tgi_batch_current_size"),
                  requests=("tgi_request_duration", "count"), tokens=("tgi_request_generated_tokens", "sum"),
                  ttft=None, latency="tgi_request_duration"),
    EngineMetrics("SGLang", pending=("sglang:num_queue_reqs", "sglang:num_running_reqs"),
                  requests=("sglang:e2e_request_latency_seconds", "count"),
                  tokens=("sglang:generation_tokens", "total"),
                  ttft="sglang:time_to_first_token_seconds", latency="sglang:e2e_request_latency_seconds"),
    EngineMetrics("llama.cpp", pending=("llamacpp:requests_deferred", "llamacpp:requests_processing"),
                  requests=None, tokens=("llamacpp:tokens_predicted", "total"), ttft=None, latency=None),
    # TEI answers /metrics on its serving port too (router/src/http/server.rs), so the scrapers need no second
    # port. `te_queue_size` is its only gauge: requests already in a batch are not counted. No token count (it
    # generates none) and no latency histogram until a captured sample holds `te_request_duration`.
    EngineMetrics("TEI", pending=("te_queue_size",), requests=("te_request_success", "total"), tokens=None,
                  ttft=None, latency=None),
)
