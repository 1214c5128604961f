"""OpenAI routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Streams are SSE exactly as the OpenAI SDK parses them: role first, content deltas, ``finish_reason`` on each
choice's last chunk, an optional usage chunk (``stream_options.include_usage``), ``data: [DONE]``; heartbeat
comments while queued; an error after the response started is sent as ``data: {"error": {...}}`` then
``[DONE]``. ``finish_reason`` is only ever ``stop``, ``length`` (or ``tool_calls`` from the tools layer).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runtime import __version__
from runtime.engine.params import TokenEvent
from runtime.errors import InvalidRequest, RuntimeAPIError, ValidationError
from runtime.generation import GenerationRun, SequenceResult
from runtime.guidance.per_request import ChatGuidance, chat_guidance, openai_finish, response_format_factory
from runtime.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from runtime.request_body import json_body, parse_body
from runtime.sse import HEARTBEAT, sse
from runtime.state import RuntimeState

router = APIRouter()

MAX_EMBEDDING_INPUTS = 2048


def _state(request: Request) -> RuntimeState:
    return request.app.state.runtime


def _fingerprint() -> str:
    return f"endpointctl-{__version__}"


def _token_logprob(event: TokenEvent) -> dict[str, Any]:
    text = event.token_text
    return {
        "token": text,
        "logprob": event.logprob,
        "bytes": list(text.encode()),
        "top_logprobs": [
            {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode())} for t in (event.top_logprobs or [])
        ],
    }


def _by_sequence(batch: list[tuple[int, TokenEvent]]) -> list[tuple[int, list[TokenEvent]]]:
    """The tokens of one wake-up grouped per choice, in order: each choice gets one chunk per wake-up.

    Why: a decode step with accepted n-gram drafts yields several tokens of a sequence at once; one chunk carrying
    their joined text (and their logprobs as lists, which both OpenAI logprobs formats are) is what vLLM's server
    sends too. A chunk is a JSON encode here and a JSON parse in every client, per event; at 32 streams that work
    shares the CPU with the model.
    """
    groups: dict[int, list[TokenEvent]] = {}
    for index, event in batch:
        groups.setdefault(index, []).append(event)
    return list(groups.items())


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens`` counts the prompt tokens the prefix cache
    supplied (not prefilled), as OpenAI reports its own prompt caching."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _cached_tokens(run: GenerationRun) -> int:
    """The prompt tokens the prefix cache supplied to this run (its first sequence's first admission; a prompt's
    sequences share it, and it is counted once as the prompt is)."""
    events = run.results.get(0) or []
    return (events[0].cached_tokens or 0) if events else 0


def _error_chunk(exc: Exception) -> bytes:
    body = exc.openai_body() if isinstance(exc, RuntimeAPIError) else {"error": {"message": str(exc)}}
    return sse(body) + b"data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------- chat
@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
async def create_chat_completion(request: Request):
    state = _state(request)
    state.check_api_key(request)
    loaded = state.require_ready()
    body = await parse_body(request, ChatCompletionRequest)
    template = getattr(state.validator.tokenizer, "chat_template", None)
    guidance = await asyncio.to_thread(
        chat_guidance, loaded, [m.to_template() for m in body.messages],
        template=template if isinstance(template, str) else None, response_format=body.response_format,
        tools=body.tools, tool_choice=body.tool_choice, parallel_tool_calls=body.parallel_tool_calls,
        tool_prompt=body.tool_prompt, max_json_depth=state.settings.max_json_depth,
    )
    prompt_text = state.validator.render_chat(guidance.messages, tools=guidance.tools,
                                              add_generation_prompt=body.add_generation_prompt)
    prompt_ids = state.validator.tokenize(prompt_text, add_special_tokens=False, param="messages")
    params = body.to_sampling_params()
    params.constraint_factory = guidance.factory
    valid = state.validator.validate(
        prompt_ids,
        params,
        max_new_tokens_set=body.requested_max_tokens is not None,
        input_param="messages",
        max_tokens_param="max_tokens",
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
    )
    with state.in_flight.admit() as slot:
        run = GenerationRun(state, valid, n=body.n)
        created = int(time.time())
        model = body.model or state.model_name
        if body.stream:
            return slot.stream(_chat_stream(run, created=created, model=model, body=body, guidance=guidance),
                               runs=[run])
        results = await run.collect(request)
    return JSONResponse(_chat_response(valid.request_id, created, model, results, valid.prompt_len, body, guidance,
                                       cached=_cached_tokens(run)))


def _chat_response(rid: str, created: int, model: str, results: list[SequenceResult], prompt_len: int,
                   body: ChatCompletionRequest, guidance: ChatGuidance, *, cached: int = 0) -> dict[str, Any]:
    choices = []
    for r in results:
        message, has_tool_calls = guidance.message(r.text, r.finish_reason)
        choices.append({
            "index": r.index,
            "message": message,
            "logprobs": {"content": [_token_logprob(e) for e in r.events]} if body.logprobs else None,
            "finish_reason": openai_finish(r.finish_reason, tool_calls=has_tool_calls),
        })
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": _fingerprint(),
        "choices": choices,
        "usage": _usage(prompt_len, sum(r.token_count for r in results), cached),
    }


async def _chat_stream(run: GenerationRun, *, created: int, model: str, body: ChatCompletionRequest,
                       guidance: ChatGuidance) -> AsyncIterator[bytes]:
    rid = run.request.request_id
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": _fingerprint()}

    def chunk(index: int, delta: dict, finish: str | None, logprobs: Any = None) -> dict:
        out = {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    tool_streams = {i: guidance.streamer() for i in range(run.n)}  # None unless tools are in play
    try:
        yield b"".join(sse(chunk(i, {"role": "assistant", "content": ""}, None)) for i in range(run.n))
        completion_tokens = 0
        async for batch in run.stream():
            if batch is None:
                yield HEARTBEAT
                continue
            out = []
            for index, events in _by_sequence(batch):
                completion_tokens += len(events)
                logprobs = {"content": [_token_logprob(e) for e in events]} if body.logprobs else None
                text = "".join(e.text for e in events)
                last = events[-1]
                tools = tool_streams[index]
                if tools is None:
                    if text or logprobs is not None:
                        out.append(sse(chunk(index, {"content": text}, None, logprobs)))
                else:  # tool-call markup becomes OpenAI tool_calls deltas; the rest stays content
                    text, calls = tools.feed(text)
                    if last.finish_reason is not None:
                        flushed, _ = tools.finish()
                        text += flushed
                    if text or logprobs is not None:
                        out.append(sse(chunk(index, {"content": text}, None, logprobs)))
                    if calls:
                        out.append(sse(chunk(index, {"tool_calls": calls}, None)))
                if last.finish_reason is not None:
                    finish = openai_finish(last.finish_reason, tool_calls=bool(tools is not None and tools.calls))
                    out.append(sse(chunk(index, {}, finish)))
            yield b"".join(out)
        if include_usage:
            yield sse({**base, "choices": [], "usage": _usage(run.request.prompt_len, completion_tokens,
                                                              _cached_tokens(run))})
        yield b"data: [DONE]\n\n"
    except RuntimeAPIError as exc:
        yield _error_chunk(exc)


# ---------------------------------------------------------------------------------------- completions
@router.post("/v1/completions", openapi_extra=json_body(CompletionRequest))
async def create_completion(request: Request):
    state = _state(request)
    state.check_api_key(request)
    state.require_ready()
    body = await parse_body(request, CompletionRequest)
    if body.suffix is not None:
        raise ValidationError("`suffix` is not supported by this server", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("`best_of` different from `n` is not supported", param="best_of")
    prompts = body.prompts()
    if not prompts:
        raise ValidationError("`prompt` cannot be empty", param="prompt")
    limit = state.settings.max_client_batch_size
    if len(prompts) > limit:
        raise ValidationError(
            f"Number of prompts exceeds the maximum allowed batch size: {len(prompts)} > {limit} (MAX_CLIENT_BATCH_SIZE)",
            param="prompt",
        )
    if body.stream and len(prompts) > 1:
        raise InvalidRequest("streaming supports a single prompt", param="prompt")
    constraint = await asyncio.to_thread(response_format_factory, state.loaded, body.response_format,
                                         max_json_depth=state.settings.max_json_depth)
    valids = []
    for p in prompts:
        ids = list(p) if isinstance(p, list) else state.validator.tokenize(p, param="prompt")
        params = body.to_sampling_params()
        params.constraint_factory = constraint
        valids.append(state.validator.validate(
            ids, params, max_new_tokens_set=body.max_tokens is not None,
            input_param="prompt", max_tokens_param="max_tokens", request_id=f"cmpl-{uuid.uuid4().hex}",
        ))
    created = int(time.time())
    model = body.model or state.model_name
    with state.in_flight.admit() as slot:
        runs = [GenerationRun(state, v, n=body.n) for v in valids]
        if body.stream:
            return slot.stream(_completion_stream(runs[0], created=created, model=model, body=body, state=state),
                               runs=runs)
        all_results = await asyncio.gather(*(run.collect(request) for run in runs))
    return JSONResponse(_completion_response(runs, all_results, created, model, body, state))


def _completion_logprobs(events: list[TokenEvent], offset: int) -> dict[str, Any]:
    tokens, lps, tops, offsets = [], [], [], []
    pos = offset
    for e in events:
        tokens.append(e.token_text)
        lps.append(e.logprob)
        tops.append({t.text: t.logprob for t in e.top_logprobs} if e.top_logprobs else None)
        offsets.append(pos)
        pos += len(e.token_text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _prompt_text(state: RuntimeState, run: GenerationRun) -> str:
    return state.validator.tokenizer.decode(run.request.prompt_ids, skip_special_tokens=True)


def _completion_response(runs, all_results, created, model, body: CompletionRequest, state: RuntimeState):
    choices = []
    prompt_tokens = completion_tokens = cached_tokens = 0
    for p_index, (run, results) in enumerate(zip(runs, all_results, strict=True)):
        prompt_tokens += run.request.prompt_len
        cached_tokens += _cached_tokens(run)
        echo = _prompt_text(state, run) if body.echo else ""
        for r in results:
            completion_tokens += r.token_count
            choices.append({
                "index": p_index * body.n + r.index,
                "text": echo + r.text,
                "logprobs": _completion_logprobs(r.events, len(echo)) if body.logprobs is not None else None,
                "finish_reason": openai_finish(r.finish_reason, tool_calls=False),
            })
    return {
        "id": runs[0].request.request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": _fingerprint(),
        "choices": choices,
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
    }


async def _completion_stream(run: GenerationRun, *, created: int, model: str, body: CompletionRequest,
                             state: RuntimeState) -> AsyncIterator[bytes]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    base = {"id": run.request.request_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": _fingerprint()}

    def chunk(index: int, text: str, finish: str | None, logprobs: Any = None) -> dict:
        out = {**base, "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    try:
        echo = _prompt_text(state, run) if body.echo else ""
        if body.echo:
            yield b"".join(sse(chunk(i, echo, None)) for i in range(run.n))
        text_offset = dict.fromkeys(range(run.n), len(echo))  # logprobs' text_offset, as in the non-stream body
        completion_tokens = 0
        async for batch in run.stream():
            if batch is None:
                yield HEARTBEAT
                continue
            out = []
            for index, events in _by_sequence(batch):
                completion_tokens += len(events)
                lp = None
                if body.logprobs is not None:
                    lp = _completion_logprobs(events, text_offset[index])
                    text_offset[index] += sum(len(e.token_text) for e in events)
                finish = openai_finish(events[-1].finish_reason, tool_calls=False)
                text = "".join(e.text for e in events)
                if text or lp is not None or finish is not None:
                    out.append(sse(chunk(index, text, finish, lp)))
            yield b"".join(out)
        if include_usage:
            yield sse({**base, "choices": [], "usage": _usage(run.request.prompt_len, completion_tokens,
                                                              _cached_tokens(run))})
        yield b"data: [DONE]\n\n"
    except RuntimeAPIError as exc:
        yield _error_chunk(exc)


# ----------------------------------------------------------------------------------------- embeddings
@router.post("/v1/embeddings", openapi_extra=json_body(EmbeddingRequest))
async def create_embeddings(request: Request):
    state = _state(request)
    state.check_api_key(request)
    loaded = state.require_ready("embed")
    body = await parse_body(request, EmbeddingRequest)
    embedder = loaded.embedder
    raw = body.input
    if isinstance(raw, str):
        texts = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        texts = [_decode_ids(loaded.tokenizer, raw)]
    elif raw and all(isinstance(x, list) for x in raw):
        texts = [_decode_ids(loaded.tokenizer, x) for x in raw]
    else:
        texts = list(raw)  # type: ignore[arg-type]
    if not texts:
        raise ValidationError("`input` cannot be empty", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise ValidationError(f"`input` has {len(texts)} items; at most {MAX_EMBEDDING_INPUTS}", param="input")
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise ValidationError(
            f"`dimensions` must be {embedder.dimensions} for this model (no truncation support). Given: {body.dimensions}",
            param="dimensions",
        )
    counts = embedder.count_tokens(texts)
    for i, count in enumerate(counts):
        if count > embedder.max_input_tokens:
            raise ValidationError(
                f"`input[{i}]` must have less than {embedder.max_input_tokens} tokens. Given: {count}", param="input"
            )
    with state.in_flight.admit():
        vectors = await asyncio.to_thread(embedder.embed, texts)
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = vec
        if body.encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    total = sum(counts)
    return {"object": "list", "data": data, "model": body.model or state.model_name,
            "usage": {"prompt_tokens": total, "total_tokens": total}}


def _decode_ids(tokenizer: Any, ids: list[int]) -> str:
    """Token-id input as text; ids outside the vocabulary are the client's mistake (the tokenizer would raise)."""
    vocab = len(tokenizer)
    if any(not 0 <= t < vocab for t in ids):
        raise ValidationError(f"`input` token ids must be in 0..{vocab - 1}", param="input")
    return tokenizer.decode(ids, skip_special_tokens=True)


# --------------------------------------------------------------------------------------------- models
@router.get("/v1/models")
async def read_models(request: Request):
    state = _state(request)
    limits = state.loaded.limits if state.loaded is not None else None
    return {
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": int(state.started),
            "owned_by": "endpointctl",
            "root": state.settings.model_id,
            "max_model_len": limits.max_total_tokens if limits else None,
        }],
    }
