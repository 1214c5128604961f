"""`chat`: talk to a running endpoint through its OpenAI-compatible API, streaming the answer.

It goes through the same door as any user's code: the openai SDK with `base_url = status.url + "/v1/"` and the
CLI's token as the API key (authenticated endpoints accept the control plane's tokens). With a prompt argument it
answers once; without, it reads one user turn per line from stdin (an interactive REPL on a terminal) and keeps
the conversation.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from cli.app import app
from cli.errors import CliError
from cli.output import err
from cli.state import NamespaceOpt, get_state


# Without a bound the runtime lets an answer run to the end of the context (TGI's default), which for a model that
# never says EOS is screens of text; 256 tokens is a long paragraph and a few seconds on a CPU.
DEFAULT_MAX_TOKENS = 256


def _client(url: str, token: str | None) -> Any:
    import openai

    # max_retries=0: a wake from zero is held by the gateway, so a retry would only duplicate the request.
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1/", api_key=token or "unused", max_retries=0, timeout=600.0)


def _complete(client: Any, *, model: str, messages: list[dict[str, str]], stream: bool, max_tokens: int,
              temperature: float | None) -> str:
    """Send one chat turn; print the answer as it arrives; return its text."""
    import openai

    kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if temperature is not None:
        kwargs["temperature"] = temperature
    parts: list[str] = []
    try:
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
    name: Annotated[str, typer.Argument(help="Endpoint name.", show_default=False)],
    prompt: Annotated[str | None, typer.Argument(help="Ask once and exit; omit for a conversation (one turn per line; /exit or Ctrl-D ends it).")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System message.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Upper bound on the answer's tokens (an answer that stops early is not padded).")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature (0 = greedy).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name sent in the request (default: the endpoint's repository).")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream tokens as they are generated.")] = True,
    namespace: NamespaceOpt = None,
) -> None:
    """Chat with a running endpoint through its OpenAI-compatible API."""
    state = get_state(ctx)
    ns = state.resolve_namespace(namespace)
    ep = state.client.get_endpoint(ns, name)
    status = ep.get("status") or {}
    url = status.get("url")
    if status.get("state") == "scaledToZero" and not url:
        # The API publishes a URL only while running; the gateway (part of the control-plane app) still answers
        # at the same place and wakes the endpoint, holding the request until a replica is ready.
        url = f"{state.settings.url}/endpoints/{quote(ns, safe='')}/{quote(name, safe='')}"
    if status.get("state") not in ("running", "scaledToZero") or not url:
        raise CliError(f"endpoint is not running (state: {status.get('state')})")
    client = _client(url, state.settings.token)
    model_name = model or (ep.get("model") or {}).get("repository") or "tgi"
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def turn(text: str) -> None:
        messages.append({"role": "user", "content": text})
        answer = _complete(client, model=model_name, messages=messages, stream=stream, max_tokens=max_tokens,
                           temperature=temperature)
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
