"""Each engine's Deployment against the real API server: it passes a server-side dry-run (schemas, probes, ports,
volumes) and a full apply becomes ready replicas on the simulated cluster, with the command line, ports and probes
the engine needs (their values are unit-tested in tests/worker/test_engines.py)."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.k8s.conftest import CPU, desired, with_gpus
from tests.k8s.test_provider import WAIT, labelled_objects, ready

pytestmark = pytest.mark.k8s

GGUF_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"

# (key, desired overrides, image, command, first args, container port, /dev/shm mounted)
ENGINES = [
    ("ep-41-runtime", {}, "ghcr.io/endpointctl/runtime:test", None, None, 8080, True),
    ("ep-42-tgi", {"image": {"tgi": {"maxInputLength": 256}}},
     "ghcr.io/huggingface/text-generation-inference:3.3.6", None, None, 8080, True),
    ("ep-43-vllm", {"image": {"vLLM": {"url": "vllm/vllm-openai:v0.23.0", "maxNumSeqs": 8}},
                    "hardware": with_gpus(2), "port": 8000},
     "vllm/vllm-openai:v0.23.0", ["vllm", "serve"], ["/repository"], 8000, True),
    ("ep-44-sglang", {"image": {"sGLang": {"tensorParallelSize": 1}}, "port": 30000},
     "lmsysorg/sglang:v0.5.6", ["python3", "-m", "sglang.launch_server"], ["--model-path", "/repository"], 30000,
     True),
    ("ep-45-llamacpp", {"image": {"llamacpp": {"modelPath": "tiny-Q8_0.gguf", "ctxSize": 512}}, "port": 8080,
                        "repository": "acme/tiny-GGUF"},
     "ghcr.io/ggml-org/llama.cpp:server-cuda", None, ["-m", "/repository/tiny-Q8_0.gguf"], 8080, False),
    ("ep-46-tei", {"image": {"tei": {"pooling": "cls"}}, "hardware": CPU, "port": 80},
     "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8", None, ["--model-id", "/repository"], 80, False),
    ("ep-47-custom", {"image": {"custom": {"url": "registry.example.com/me/server:1", "port": 8080}}},
     "registry.example.com/me/server:1", None, None, 8080, True),
    ("ep-48-gguf", {"repository": "acme/tiny-GGUF", "env": {"GGUF_FILE": "tiny-Q4_K_M.gguf"}, "hardware": CPU},
     GGUF_IMAGE, None, ["-m", "/repository/tiny-Q4_K_M.gguf"], 8080, False),
]


@pytest.fixture
def engine_provider(make_provider):
    return make_provider(gguf_image=GGUF_IMAGE)


@pytest.mark.parametrize("case", ENGINES, ids=[c[0] for c in ENGINES])
def test_each_engine_passes_dry_run_then_applies_to_ready_pods(engine_provider, kube_api, kube_namespace, case):
    key, overrides, image, command, first_args, port, shm = case
    provider = engine_provider
    provider.start()
    d = desired(key, **overrides)
    provider.apply(d, dry_run=True)
    assert labelled_objects(kube_api, kube_namespace, key) == {}  # a dry-run leaves nothing behind

    provider.apply(d)
    assert provider.wait_until(lambda: ready(provider, key), WAIT)
    pod = k8s.AppsV1Api(kube_api).read_namespaced_deployment(key, kube_namespace).spec.template.spec
    c, = pod.containers
    assert c.image == image and c.command == command
    assert first_args is None and not c.args or c.args[:len(first_args)] == first_args
    assert {p.name: p.container_port for p in c.ports}["http"] == port
    assert c.startup_probe.http_get.path == c.readiness_probe.http_get.path == "/health"
    assert c.startup_probe.http_get.port == "http"
    assert ("/dev/shm" in {m.mount_path for m in c.volume_mounts}) is shm
    assert provider.observe(key).replicas[0].url.endswith(f":{port}")  # the gateway reaches the engine's port
    provider.delete(key)
