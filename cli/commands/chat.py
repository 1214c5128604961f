"""`chat`: talk to a running endpoint through its OpenAI-compatible API, streaming the answer.

It goes through the same door as any user's code: the openai SDK with `base_url = status.url + "/v1/"` and the
CLI's token as the API key (authenticated endpoints accept the control plane's tokens). With a prompt argument it
answers once; without, it reads one user turn per line from stdin (an interactive REPL on a terminal) and keeps
the conversation. `-o json`/`yaml` prints each answer as the API's chat completion object (not streamed).

An endpoint scaled to zero is woken first (`resume`, then the same wait as `wait`): on a terminal a spinner shows
its state until a replica is ready; otherwise one line says it is waking. Without that the first answer would just
hang for the seconds a replica takes to load.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.app import app
from cli.errors import CliError
from cli.output import OutputFormat, emit_data, err, message
from cli.state import NamespaceOpt, OutputOpt, get_state


# Without a bound the runtime lets an answer run to the end of the context (TGI's default), which for a model that
# never says EOS is screens of text; 256 tokens is a long paragraph and a few seconds on a CPU.
DEFAULT_MAX_TOKENS = 256


def _client(url: str, token: str | None) -> Any:
    import openai

    # max_retries=0: a wake from zero is held by the gateway, so a retry would only duplicate the request.
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1/", api_key=token or "unused", max_retries=0, timeout=600.0)


def _complete(client: Any, *, model: str, messages: list[dict[str, str]], stream: bool, max_tokens: int,
              temperature: float | None, fmt: OutputFormat = OutputFormat.table) -> str:
    """Send one chat turn; print the answer as it arrives (or, for -o json/yaml, the whole object); return its text."""
    import openai

    kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if temperature is not None:
        kwargs["temperature"] = temperature
    parts: list[str] = []
    try:
        if fmt.machine:
            answer = client.chat.completions.create(**kwargs)
            emit_data(answer.model_dump(mode="json", exclude_none=True), fmt)
            return answer.choices[0].message.content or ""
        if stream:
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta.content or ""
                if delta:
                    parts.append(delta)
                    sys.stdout.write(delta)
                    sys.stdout.flush()
        else:
            answer = client.chat.completions.create(**kwargs)
            parts.append(answer.choices[0].message.content or "")
            sys.stdout.write(parts[0])
    except openai.APIConnectionError as exc:
        raise CliError(f"cannot reach the endpoint at {client.base_url}: {exc.__cause__ or exc}") from exc
    except openai.APIStatusError as exc:
        from controlplane.client import error_message

        raise CliError(f"the endpoint answered {exc.status_code}: {error_message(exc.response)}") from exc
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)


@app.command(rich_help_panel="Endpoints")
def chat(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Endpoint name.", show_default=False)],
    prompt: Annotated[str | None, typer.Argument(metavar="[PROMPT]", help="Ask once and exit; omit for a conversation (one turn per line; /exit or Ctrl-D ends it).")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System message.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Upper bound on the answer's tokens (an answer that stops early is not padded).")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature (0 = greedy).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name sent in the request (default: the endpoint's repository).")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream tokens as they are generated.")] = True,
    namespace: NamespaceOpt = None,
    output: OutputOpt = None,
) -> None:
    """Chat with a running endpoint through its OpenAI-compatible API (one scaled to zero is woken first)."""
    from cli.commands.endpoints import not_found_hint
    from controlplane.client import EndpointctlHTTPError

    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    fmt = state.fmt(output)
    try:
        ep = state.client.get_endpoint(ns, name)
    except EndpointctlHTTPError as exc:
        raise (not_found_hint(state.client, ns, name, exc) or exc) from exc
    status = ep.get("status") or {}
    if status.get("state") == "scaledToZero":
        ep = _wake(state.client, ns, name)
        status = ep.get("status") or {}
    url = status.get("url")
    if status.get("state") == "paused":
        raise CliError(f"endpoint {name} is paused: run `endpointctl resume {name}` first")
    if status.get("state") != "running" or not url:
        raise CliError(f"endpoint {name} is not running (state: {status.get('state')}); "
                       f"`endpointctl wait {name}` waits until it is")
    client = _client(url, state.settings.token)
    model_name = model or (ep.get("model") or {}).get("repository") or "tgi"
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def turn(text: str) -> None:
        messages.append({"role": "user", "content": text})
        answer = _complete(client, model=model_name, messages=messages, stream=stream, max_tokens=max_tokens,
                           temperature=temperature, fmt=fmt)
        messages.append({"role": "assistant", "content": answer})

    if prompt is not None:
        turn(prompt)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"chatting with {ns}/{name} ({url}); /exit or Ctrl-D to stop", markup=False)
    while True:
        if interactive:
            err.print("> ", end="", markup=False)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if not text:
            continue
        try:
            turn(text)
        except KeyboardInterrupt:
            # Ctrl-C stops this answer, not the conversation; the unanswered turn is dropped.
            messages.pop()
            sys.stdout.write("\n")
            err.print("(answer interrupted)", markup=False)


def _wake(client: Any, ns: str, name: str) -> dict[str, Any]:
    """Resume an endpoint scaled to zero and wait for a replica, saying so (spinner with the state on a terminal,
    one line otherwise); returns the running endpoint."""
    from cli.commands.endpoints import request_resume
    from cli.waiting import wait_for_running

    if not sys.stderr.isatty():
        message(f"waking {ns}/{name} (scaled to zero); the answer follows once a replica is ready")
    request_resume(client, ns, name)
    return wait_for_running(client, ns, name, timeout=None, quiet=True)
