"""What each image variant's container runs (pure rendering: `worker.engines.engine_run` and the manifests built
from it); the same specs pass a server-side dry-run and a full apply in tests/k8s/test_engines.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from kubernetes import client as k8s

from common.config import Settings
from common.models import Endpoint
from tests.k8s.conftest import CPU, desired, with_gpus
from worker.engines import GIB, engine_run
from worker.providers.base import ProviderPermanentError
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import ANNOTATION_ENGINE, RenderOptions, render
from worker.providers.local import LocalProvider
from worker.reconcile import build_deployment

OPTS = RenderOptions(namespace="endpoints", runtime_image="runtime:test")
GGUF = "unsloth/Qwen3-0.6B-GGUF"


def run(d, **kw):
    return engine_run(d, runtime_image="runtime:test", **kw)


def container(d, opts: RenderOptions = OPTS) -> tuple[dict, dict]:
    m = render(d, opts)
    pod = m.deployment["spec"]["template"]["spec"]
    return pod["containers"][0], pod


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_bundled_runtime_keeps_tgi_variables_and_its_entrypoint() -> None:
    r = run(desired(hardware=with_gpus(2)))
    assert (r.kind, r.image, r.command, r.args) == ("runtime", "runtime:test", None, [])
    assert r.env["MODEL_ID"] == "/repository" and r.env["PORT"] == "8080" and r.env["NUM_SHARD"] == "2"
    assert r.env["MAX_INPUT_LENGTH"] == "512"  # the endpoint's own env passes through
    assert r.metrics_path == "/metrics" and r.shm_bytes == GIB and r.startup_seconds == 1800


def test_tgi_settings_become_its_variables() -> None:
    r = run(desired(image={"tgi": {"maxInputLength": 1000, "maxTotalTokens": 1512, "maxBatchPrefillTokens": 2048,
                                   "quantize": "awq"}}))
    assert r.image == "ghcr.io/huggingface/text-generation-inference:3.3.6" and r.command is None
    assert {k: r.env[k] for k in ("MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "MAX_BATCH_PREFILL_TOKENS", "QUANTIZE")} == {
        "MAX_INPUT_TOKENS": "1000", "MAX_TOTAL_TOKENS": "1024", "MAX_BATCH_PREFILL_TOKENS": "2048", "QUANTIZE": "awq"}
    # (the endpoint's env, MAX_TOTAL_TOKENS=1024 here, is applied last: what the tenant wrote wins)


def test_vllm_serves_the_repository_with_tensor_parallel_over_the_instance_gpus() -> None:
    d = desired(image={"vLLM": {"url": "vllm/vllm-openai:v0.23.0", "maxNumSeqs": 64, "kvCacheDtype": "fp8"}},
                hardware=with_gpus(4), port=8000, args=["--enable-lora"])
    r = run(d)
    assert r.command == ["vllm", "serve"] and r.args[0] == "/repository"
    assert r.args[r.args.index("--served-model-name") + 1: r.args.index("--served-model-name") + 4] == [
        "acme/tiny-llama", "tgi", "dummy"]
    assert flag(r.args, "--port") == "8000" and flag(r.args, "--host") == "0.0.0.0"
    assert flag(r.args, "--tensor-parallel-size") == "4" and flag(r.args, "--max-model-len") == "1024"
    assert flag(r.args, "--max-num-seqs") == "64" and flag(r.args, "--kv-cache-dtype") == "fp8"
    assert r.args[-1] == "--enable-lora"  # the endpoint's container arguments come after ours
    assert "MODEL_ID" not in r.env and r.env["HF_HUB_OFFLINE"] == "1"
    assert r.shm_bytes == 4 * GIB  # NCCL between 4 GPU workers
    tp2 = run(dataclasses.replace(d, image={"vLLM": {"tensorParallelSize": 2, "dataParallelSize": 2}}))
    assert flag(tp2.args, "--tensor-parallel-size") == "2" and flag(tp2.args, "--data-parallel-size") == "2"
    assert tp2.image == "vllm/vllm-openai:v0.23.0"  # the pinned default when the variant has no url


def test_sglang_launches_its_server_with_metrics() -> None:
    r = run(desired(image={"sGLang": {}}, hardware=with_gpus(2), port=30000))
    assert r.command == ["python3", "-m", "sglang.launch_server"]
    assert flag(r.args, "--model-path") == "/repository" and flag(r.args, "--tp") == "2"
    assert flag(r.args, "--port") == "30000" and "--enable-metrics" in r.args
    assert flag(r.args, "--context-length") == "1024" and r.shm_bytes == 2 * GIB


def test_llamacpp_serves_the_named_gguf_file_with_metrics() -> None:
    d = desired(repository=GGUF, image={"llamacpp": {"modelPath": "Qwen3-0.6B-Q8_0.gguf", "ctxSize": 4096,
                                                     "nParallel": 2, "threadsHttp": 4}}, port=8080)
    r = run(d)
    assert r.image == "ghcr.io/ggml-org/llama.cpp:server-cuda" and r.command is None
    assert flag(r.args, "-m") == "/repository/Qwen3-0.6B-Q8_0.gguf" and "--metrics" in r.args
    assert flag(r.args, "--ctx-size") == "8192" and flag(r.args, "--parallel") == "2"  # per request × slots
    assert flag(r.args, "-ngl") == "999" and flag(r.args, "--alias") == GGUF and flag(r.args, "--port") == "8080"
    assert r.shm_bytes is None and r.startup_seconds == 900
    on_cpu = run(dataclasses.replace(d, hardware=CPU))
    assert on_cpu.image == "ghcr.io/ggml-org/llama.cpp:server" and "-ngl" not in on_cpu.args
    from_env = run(dataclasses.replace(d, image={"llamacpp": {}}, env={"GGUF_FILE": "q4.gguf"}))
    assert flag(from_env.args, "-m") == "/repository/q4.gguf"
    with pytest.raises(ValueError, match="GGUF file"):
        run(dataclasses.replace(d, image={"llamacpp": {}}))
    with pytest.raises(ProviderPermanentError, match="GGUF file"):
        render(dataclasses.replace(d, image={"llamacpp": {}}), OPTS)


def test_tei_listens_on_the_port_and_its_metrics_are_read_there() -> None:
    d = desired(image={"tei": {"pooling": "mean", "maxBatchTokens": 16384}}, hardware=CPU, port=80)
    r = run(d)
    assert r.image == "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8"
    assert flag(r.args, "--model-id") == "/repository" and flag(r.args, "--pooling") == "mean"
    assert r.metrics_port == 80 and r.metrics_path == "/metrics" and r.shm_bytes is None and r.startup_seconds == 450
    c, pod = container(d)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 80}
    assert "dshm" not in {v["name"] for v in pod["volumes"]}


def test_custom_image_runs_its_own_entrypoint_with_tgi_variables() -> None:
    r = run(desired(image={"custom": {"url": "ghcr.io/acme/server:1"}}, command=["serve"], args=["--fast"]))
    assert (r.image, r.command, r.args, r.env["MODEL_ID"]) == ("ghcr.io/acme/server:1", ["serve"], ["--fast"],
                                                               "/repository")
    with pytest.raises(ValueError, match="url"):
        run(desired(image={"custom": {}}))


def test_operator_images_replace_the_pinned_defaults() -> None:
    r = run(desired(image={"vLLM": {}}), engine_images={"vllm": "registry.local/vllm:1"})
    assert r.image == "registry.local/vllm:1"


def test_manifests_carry_the_engine_probes_ports_and_shm() -> None:
    d = desired(image={"vLLM": {}}, hardware=with_gpus(2), port=8000)
    c, pod = container(d, dataclasses.replace(OPTS, startup_timeout_seconds=1200))
    assert c["command"] == ["vllm", "serve"] and c["ports"] == [{"name": "http", "containerPort": 8000,
                                                                 "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 1200
    assert c["readinessProbe"]["failureThreshold"] == 3
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    annotations = render(d, OPTS).deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ANNOTATION_ENGINE] == "vllm"
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_a_gguf_repository_with_the_default_image_runs_llamacpp_where_the_operator_chose_it() -> None:
    d = desired(repository=GGUF, env={"GGUF_FILE": "Qwen3-0.6B-Q4_K_M.gguf"}, port=80, hardware=CPU)
    assert run(d).kind == "runtime"  # no GGUF image configured: the runtime serves GGUF itself
    r = run(d, gguf_image="ghcr.io/ggml-org/llama.cpp:server")
    assert (r.kind, r.image, flag(r.args, "-m")) == ("llamacpp", "ghcr.io/ggml-org/llama.cpp:server",
                                                     "/repository/Qwen3-0.6B-Q4_K_M.gguf")
    # Without a file name llama.cpp cannot start; the runtime picks the best quantization itself.
    assert run(dataclasses.replace(d, env={}), gguf_image="llama:x").kind == "runtime"
    # Not a GGUF repository, or an explicit image: the variant decides.
    assert run(dataclasses.replace(d, repository="acme/tiny-llama", env={}), gguf_image="llama:x").kind == "runtime"
    assert run(dataclasses.replace(d, image={"tgi": {}}), gguf_image="llama:x").kind == "tgi"


def test_status_names_the_engine_and_the_image() -> None:
    kube = KubernetesProvider(k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9")),
                              dataclasses.replace(OPTS, gguf_image="ghcr.io/ggml-org/llama.cpp:server"))
    assert kube.engine(desired(image={"vLLM": {"url": "vllm/vllm-openai:v0.23.0"}})) == "vLLM vllm/vllm-openai:v0.23.0"
    assert kube.engine(desired(repository=GGUF, env={"GGUF_FILE": "a.gguf"})) == (
        "llama.cpp ghcr.io/ggml-org/llama.cpp:server")
    assert kube.engine(desired()) == "endpointctl runtime runtime:test"
    kube.close()


@pytest.mark.parametrize(("variant", "label"), [("vLLM", "vLLM"), ("sGLang", "SGLang"), ("llamacpp", "llama.cpp"),
                                                ("tei", "TEI")])
def test_the_local_provider_refuses_engines_that_need_their_image(tmp_path: Path, variant: str, label: str) -> None:
    local = LocalProvider(tmp_path / "data")
    with pytest.raises(ProviderPermanentError, match=f"{label} needs a container engine"):
        local.apply(desired(image={variant: {"modelPath": "a.gguf"}}, hardware=CPU))


@pytest.mark.parametrize(("variant", "port"), [("vLLM", 8000), ("sGLang", 30000), ("llamacpp", 8080), ("tgi", 80),
                                               ("tei", 80), ("huggingface", 80)])
def test_each_engine_listens_on_its_documented_port_unless_the_variant_says(tmp_path: Path, variant: str,
                                                                            port: int) -> None:
    spec = {"compute": {"accelerator": "gpu", "instanceType": "nvidia-l4", "instanceSize": "x1",
                        "scaling": {"minReplica": 1, "maxReplica": 1}},
            "model": {"repository": "acme/tiny", "framework": "pytorch", "image": {variant: {}}},
            "provider": {"vendor": "aws", "region": "us-east-1"}}
    row = Endpoint(id=3, namespace="alice", name="demo", type="authenticated", spec=spec, spec_revision=1, secrets={})
    settings = Settings(data_dir=tmp_path)
    assert build_deployment(row, settings, replicas=1).port == port
    spec["model"]["image"] = {variant: {"port": 9001}}
    assert build_deployment(row, settings, replicas=1).port == 9001


def test_the_runtime_says_when_it_serves_a_gguf_repository(tmp_path: Path) -> None:
    assert run(desired(repository=GGUF)).describe() == "endpointctl runtime runtime:test (GGUF)"
    local = LocalProvider(tmp_path / "data")
    assert local.engine(desired(repository=GGUF)) == "endpointctl runtime (local processes, GGUF)"
    model = tmp_path / "model"
    model.mkdir()
    (model / "tiny-Q8_0.gguf").write_bytes(b"GGUF")
    assert local.engine(desired(repository=str(model))) == "endpointctl runtime (local processes, GGUF)"
    (model / "config.json").write_text("{}")  # a transformers snapshot is served from its weights
    assert local.engine(desired(repository=str(model))) == "endpointctl runtime (local processes)"
