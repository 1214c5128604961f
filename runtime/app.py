"""The runtime's ASGI app: :func:`create_app` wires the protocol routers, the routes every replica answers
(health, info, metrics, tokenize), the middleware (payload limit, access log) and the error mapping.

The app answers at once; the model loads and warms up in a background thread while ``/health`` answers 503, then
200. Routes per protocol live in ``runtime/openai`` and ``runtime/tgi``; this module maps every
:class:`~runtime.errors.RuntimeAPIError` to HTTP in one place — OpenAI's envelope on ``/v1/*``, TGI's body
elsewhere. Launching it (settings, uvicorn, signals) is :mod:`runtime.launch`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime import __version__
from runtime.config import RuntimeSettings
from runtime.errors import (
    GenerationFailed,
    InvalidRequest,
    ModelLoadError,
    NotReady,
    PayloadTooLarge,
    RoutingError,
    RuntimeAPIError,
    ValidationError,
)
from runtime.metrics import RuntimeMetrics
from runtime.openai.protocol import ChatMessage
from runtime.openai.routes import router as openai_router
from runtime.request_body import json_body, read_json, validate_body
from runtime.state import RuntimeState
from runtime.tgi.routes import router as tgi_router

log = logging.getLogger("runtime")

OPENAI_PREFIXES = ("/v1/",)


def _is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIXES) or path in ("/tokenize", "/detokenize")


def error_response(path: str, exc: RuntimeAPIError) -> JSONResponse:
    body = exc.openai_body() if _is_openai_path(path) else exc.tgi_body()
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


class PayloadLimitMiddleware:
    """Answer 413 for bodies over PAYLOAD_LIMIT, by Content-Length or by counting a streamed body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = PayloadTooLarge(f"Request body is larger than PAYLOAD_LIMIT ({self.limit} bytes)")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await error_response(scope["path"], too_big)(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return message

        return await self.app(scope, limited_receive, send)


class AccessLogMiddleware:
    """One stderr line per request: method, path, status, duration (streams: time to response start)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        status = 0

        async def logging_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if scope["path"] not in ("/health", "/metrics"):
                log.info("%s %s %s %.1fms", scope["method"], scope["path"], status, (time.monotonic() - start) * 1000)


class _TgiTokenizeRequest(BaseModel):
    """TGI's shape (answered with offsets); documentation only: the route tells the two apart by ``inputs``."""

    inputs: str


class _TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class _DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[int]


def _load_in_background(state: RuntimeState, loop: asyncio.AbstractEventLoop) -> None:
    from runtime.engine.loader import load_model
    from runtime.engine.validation import Validator

    try:
        loaded = load_model(state.settings)
    except Exception as exc:  # noqa: BLE001 - whatever the loader raised, this replica cannot serve
        if not isinstance(exc, ModelLoadError):
            log.exception("model load failed (traceback follows)")
        # The cause in one line, last before the exit line: status messages and events quote it (common/failure.py).
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, ModelLoadError):
            detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        log.error("model load failed: %s", detail)
        state.load_error = f"Model failed to load: {exc}"
        # Exit rather than idle with /health at 503: the supervisor (kubelet or local) sees a crash, restarts with
        # backoff and reports CrashLoopBackOff / failed with these log lines, instead of waiting out a deadline.
        log.error("exiting with code 3: the model could not be loaded")
        logging.shutdown()
        os._exit(3)

    def publish() -> None:
        limits = loaded.limits
        state.validator = Validator(
            loaded.tokenizer,
            max_input_tokens=limits.max_input_tokens,
            max_total_tokens=limits.max_total_tokens,
            max_stop_sequences=state.settings.max_stop_sequences,
            max_top_n_tokens=state.settings.max_top_n_tokens,
        )
        state.loaded = loaded
        if loaded.engine is not None:
            loaded.engine.on_token_gap = state.metrics.observe_token_gap
            loaded.engine.start(loop)
            engine = loaded.engine
            state.metrics.attach_engine(lambda: {
                "queue_size": engine.stats.queue_size,
                "batch_size": engine.stats.batch_size,
                "batch_tokens": engine.stats.batch_tokens,
                "in_flight": state.in_flight.count,
                "max_batch": engine.stats.max_batch_size_reached,
                "steps": engine.stats.steps,
                "batch_sum": engine.stats.decode_batch_sum,
                "spec_draft": engine.stats.spec_draft_tokens,
                "spec_accepted": engine.stats.spec_accepted_tokens,
                "prefix_queries": engine.stats.prefix_cache_queries,
                "prefix_hits": engine.stats.prefix_cache_hits,
                "kv_usage": engine.stats.kv_usage,
                "preemptions": engine.stats.preemptions,
            })
        state.ready = True
        log.info("ready: %s (%s, %s) limits=%s", state.settings.model_id, loaded.kind, loaded.runner_kind, limits)

    loop.call_soon_threadsafe(publish)


def create_app(settings: RuntimeSettings, *, load: bool = True) -> FastAPI:
    state = RuntimeState(settings=settings, metrics=RuntimeMetrics(settings.model_name()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if load:
            loop = asyncio.get_running_loop()
            threading.Thread(target=_load_in_background, args=(state, loop), name="loader", daemon=True).start()
        yield
        if state.loaded is not None and state.loaded.engine is not None:
            state.loaded.engine.stop()

    app = FastAPI(title="endpointctl runtime", version=__version__, lifespan=lifespan)
    app.state.runtime = state

    @app.exception_handler(RuntimeAPIError)
    async def handle_runtime_error(request: Request, exc: RuntimeAPIError):
        return error_response(request.url.path, exc)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException):
        # Unknown routes (404) and wrong methods (405, with its Allow header) in the envelope too, not {"detail"}.
        return error_response(request.url.path, RoutingError(exc.status_code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception):
        # A bug, not the client's doing: Starlette logs the traceback; the client gets its route family's envelope
        # (never a text/plain page) and nothing of the exception's text.
        return error_response(request.url.path, GenerationFailed("Internal server error"))

    @app.exception_handler(RequestValidationError)
    async def handle_request_validation(request: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in err["loc"] if p != "body") or None
        return error_response(request.url.path, InvalidRequest(f"Invalid value for '{param}': {err['msg']}", param=param))

    app.include_router(openai_router)
    app.include_router(tgi_router)

    @app.get("/health")
    @app.get("/ping")
    @app.get("/")  # TGI answers GET / too; older huggingface_hub wait() probed the bare endpoint URL
    async def read_health():
        if not state.ready:
            raise NotReady(state.load_error or "Model is loading")
        return Response(status_code=200)

    @app.get("/info")
    async def read_info():
        loaded = state.loaded
        limits = loaded.limits if loaded is not None else None
        return {
            "model_id": settings.model_id,
            "model_sha": loaded.model_sha if loaded else None,
            "model_dtype": loaded.dtype if loaded else None,
            "model_device_type": loaded.device if loaded else None,
            "model_pipeline_tag": ("feature-extraction" if loaded.kind == "embed" else "text-generation") if loaded else None,
            "max_concurrent_requests": settings.max_concurrent_requests,
            "max_best_of": settings.max_best_of,
            "max_stop_sequences": settings.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens if limits else None,
            "max_input_length": limits.max_input_tokens if limits else None,
            "max_total_tokens": limits.max_total_tokens if limits else None,
            "max_batch_prefill_tokens": limits.max_batch_prefill_tokens if limits else None,
            "max_batch_total_tokens": limits.max_batch_total_tokens if limits else None,
            "max_batch_size": limits.max_batch_size if limits else None,
            "max_client_batch_size": settings.max_client_batch_size,
            "speculate": loaded.engine.speculate if loaded is not None and loaded.engine is not None else None,
            "prefix_caching": loaded.engine.prefix_caching if loaded is not None and loaded.engine is not None else None,
            "router": "endpointctl-runtime",
            "engine": loaded.runner_kind if loaded else None,
            "kernels": loaded.kernels if loaded else None,
            "ready": state.ready,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }

    @app.get("/metrics")
    async def read_metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/tokenize", openapi_extra=json_body(_TgiTokenizeRequest, _TokenizeRequest))
    async def tokenize(request: Request):
        state.check_api_key(request)
        loaded = state.require_ready(None)
        data = await read_json(request)
        tokenizer = loaded.tokenizer
        if isinstance(data, dict) and "inputs" in data:  # TGI shape
            if not isinstance(data["inputs"], str):
                raise ValidationError("`inputs` must be a string", param="inputs")
            enc = tokenizer(data["inputs"], return_offsets_mapping=True)
            return [
                {"id": i, "text": data["inputs"][s:e], "start": s, "stop": e}
                for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            ]
        body = validate_body(data, _TokenizeRequest)
        if body.messages is not None:
            messages = [m.to_template() for m in body.messages]
            text = state.validator.render_chat(messages, add_generation_prompt=body.add_generation_prompt)
            ids = state.validator.tokenize(text, add_special_tokens=False, param="messages")
        elif body.prompt is not None:
            ids = state.validator.tokenize(body.prompt, add_special_tokens=body.add_special_tokens, param="prompt")
        else:
            raise InvalidRequest("send `prompt` or `messages` (or TGI's `inputs`)", param="prompt")
        out: dict[str, Any] = {"count": len(ids), "max_model_len": loaded.limits.max_total_tokens, "tokens": ids}
        if body.return_token_strs:
            out["token_strs"] = tokenizer.convert_ids_to_tokens(ids)
        return out

    @app.post("/detokenize", openapi_extra=json_body(_DetokenizeRequest))
    async def detokenize(request: Request):
        state.check_api_key(request)
        loaded = state.require_ready(None)
        body = validate_body(await read_json(request), _DetokenizeRequest)
        vocab = len(loaded.tokenizer)
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise ValidationError(f"token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", param="tokens")
        return {"prompt": loaded.tokenizer.decode(body.tokens)}

    app.add_middleware(PayloadLimitMiddleware, limit=settings.payload_limit)
    app.add_middleware(AccessLogMiddleware)
    return app
