"""TGI routes: ``POST /generate``, ``POST /generate_stream``, ``POST /`` (what ``InferenceClient.text_generation``
calls; non-streaming it answers an array), with TGI's ``details`` objects, token events and
``{"error", "error_type"}`` errors (also as an SSE event mid-stream). No ``[DONE]`` on TGI streams.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runtime.engine.params import FinishReason, TokenEvent, TopToken
from runtime.errors import RuntimeAPIError, ValidationError
from runtime.generation import GenerationRun, SequenceResult
from runtime.guidance.per_request import grammar_factory, precompile_grammar
from runtime.inflight import AdmittedStream
from runtime.request_body import json_body, parse_body
from runtime.sse import HEARTBEAT, sse
from runtime.state import RuntimeState
from runtime.tgi.protocol import GenerateRequest, token_json

router = APIRouter()


def tgi_finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    if reason is FinishReason.LENGTH:
        return "length"
    if reason is FinishReason.STOP_SEQUENCE:
        return "stop_sequence"
    return "eos_token"


def _lp(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _token(event: TokenEvent) -> dict[str, Any]:
    return token_json(token_id=event.token_id, text=event.token_text, logprob=_lp(event.logprob), special=event.special)


def _top(tokens: list[TopToken] | None, special_ids: set[int]) -> list[dict[str, Any]]:
    return [token_json(token_id=t.id, text=t.text, logprob=_lp(t.logprob), special=t.id in special_ids) for t in tokens or []]


def _state(request: Request) -> RuntimeState:
    return request.app.state.runtime


def _prepare(state: RuntimeState, body: GenerateRequest):
    p = body.parameters
    p.check(max_best_of=state.settings.max_best_of)
    params = p.to_sampling_params()
    # 422 on a bad grammar, before any work
    params.constraint_factory = grammar_factory(state.loaded, p.grammar, max_json_depth=state.settings.max_json_depth)
    best_of = p.best_of or 1
    if best_of > 1:
        params.logprobs = True
    ids = state.validator.tokenize(body.inputs)
    valid = state.validator.validate(
        ids, params, max_new_tokens_set=p.max_new_tokens is not None, truncate=p.truncate,
        request_id=uuid.uuid4().hex,
    )
    return valid, best_of


def _details(result: SequenceResult, body: GenerateRequest, special_ids: set[int]) -> dict[str, Any]:
    p = body.parameters
    out: dict[str, Any] = {
        "finish_reason": tgi_finish_reason(result.finish_reason),
        "generated_tokens": result.token_count,
        "seed": result.seed,
        "prefill": [],
        "tokens": [_token(e) for e in result.events],
    }
    if p.decoder_input_details and result.prompt_tokens:
        out["prefill"] = [
            token_json(token_id=t.id, text=t.text, logprob=_lp(t.logprob), special=t.id in special_ids)
            for t in result.prompt_tokens
        ]
    if p.top_n_tokens:
        out["top_tokens"] = [_top(e.top_logprobs, special_ids) for e in result.events]
    return out


def _cum_logprob(result: SequenceResult) -> float:
    return sum(e.logprob or 0.0 for e in result.events)


async def _generate(request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    state = _state(request)
    state.check_api_key(request)
    loaded = state.require_ready()
    body = await parse_body(request, GenerateRequest, status_cls=ValidationError)
    return await _generate_body(request, state, loaded, body)


async def _generate_body(request: Request, state: RuntimeState, loaded, body: GenerateRequest):
    start = time.monotonic()
    await precompile_grammar(loaded, body.parameters.grammar, max_json_depth=state.settings.max_json_depth)
    valid, best_of = _prepare(state, body)
    with state.in_flight.admit():
        run = GenerationRun(state, valid, n=best_of)
        results = await run.collect(request)
    special_ids = set(loaded.tokenizer.all_special_ids)
    ranked = sorted(results, key=_cum_logprob, reverse=True) if best_of > 1 else results
    best = ranked[0]
    prefix = body.inputs if body.parameters.return_full_text else ""
    response: dict[str, Any] = {"generated_text": prefix + best.text}
    if body.parameters.details:
        details = _details(best, body, special_ids)
        if best_of > 1:
            details["best_of_sequences"] = [
                {**_details(r, body, special_ids), "generated_text": prefix + r.text} for r in ranked[1:]
            ]
        response["details"] = details
    elapsed = time.monotonic() - start
    headers = {
        "x-compute-type": loaded.device,
        "x-total-time": str(int(elapsed * 1000)),
        "x-prompt-tokens": str(valid.prompt_len),
        "x-generated-tokens": str(best.token_count),
        "x-time-per-token": str(int(elapsed * 1000 / max(1, best.token_count))),
    }
    return response, headers


@router.post("/generate", openapi_extra=json_body(GenerateRequest))
async def generate(request: Request):
    response, headers = await _generate(request)
    return JSONResponse(response, headers=headers)


@router.post("/generate_stream", openapi_extra=json_body(GenerateRequest))
async def generate_stream(request: Request):
    state = _state(request)
    state.check_api_key(request)
    loaded = state.require_ready()
    body = await parse_body(request, GenerateRequest, status_cls=ValidationError)
    await precompile_grammar(loaded, body.parameters.grammar, max_json_depth=state.settings.max_json_depth)
    return _stream_response(state, loaded, body)


@router.post("/", openapi_extra=json_body(GenerateRequest))
async def compat_generate(request: Request):
    state = _state(request)
    state.check_api_key(request)
    loaded = state.require_ready()
    body = await parse_body(request, GenerateRequest, status_cls=ValidationError)
    if body.stream:
        await precompile_grammar(loaded, body.parameters.grammar, max_json_depth=state.settings.max_json_depth)
        return _stream_response(state, loaded, body)
    response, headers = await _generate_body(request, state, loaded, body)
    return JSONResponse([response], headers=headers)


def _stream_response(state: RuntimeState, loaded, body: GenerateRequest) -> AdmittedStream:
    p = body.parameters
    if p.best_of is not None and p.best_of > 1:
        raise ValidationError("`best_of` != 1 is not allowed for this endpoint", param="best_of")
    if p.decoder_input_details:
        raise ValidationError("`decoder_input_details` == true is not supported when streaming tokens",
                              param="decoder_input_details")
    valid, _ = _prepare(state, body)
    with state.in_flight.admit() as slot:
        run = GenerationRun(state, valid, n=1)
        return slot.stream(_stream(loaded, run, body), runs=[run])


async def _stream(loaded, run: GenerationRun, body: GenerateRequest) -> AsyncIterator[bytes]:
    special_ids = set(loaded.tokenizer.all_special_ids)
    prefix = body.inputs if body.parameters.return_full_text else ""
    top_n = body.parameters.top_n_tokens
    try:
        index = 0
        async for batch in run.stream():
            if batch is None:
                yield HEARTBEAT
                continue
            out = []
            for _, event in batch:
                index += 1
                item: dict[str, Any] = {"index": index, "token": _token(event), "generated_text": None, "details": None}
                if top_n:
                    item["top_tokens"] = _top(event.top_logprobs, special_ids)
                if event.finish_reason is not None:
                    item["generated_text"] = prefix + (event.output_text or "")
                    item["details"] = {
                        "finish_reason": tgi_finish_reason(event.finish_reason),
                        "generated_tokens": event.generated_tokens,
                        "seed": event.seed,
                        "input_length": run.request.prompt_len,
                    }
                out.append(sse(item))
            yield b"".join(out)
    except RuntimeAPIError as exc:
        yield sse(exc.tgi_body())
