"""What one replica knows while it serves: its settings, the loaded model once ready, the request validator, the
in-flight gate — and the checks every route makes against them first (API key, readiness, model kind)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from runtime.config import RuntimeSettings
from runtime.engine.validation import Validator
from runtime.errors import NotFound, NotReady, Unauthorized
from runtime.inflight import InFlight
from runtime.metrics import RuntimeMetrics


@dataclass
class RuntimeState:
    settings: RuntimeSettings
    metrics: RuntimeMetrics
    loaded: Any = None  # runtime.engine.loader.LoadedModel once ready
    validator: Validator | None = None
    ready: bool = False
    load_error: str | None = None
    started: float = field(default_factory=time.time)
    in_flight: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self.in_flight = InFlight(self.settings.max_concurrent_requests, self.metrics)

    @property
    def model_name(self) -> str:
        return self.settings.model_name()

    def require_ready(self, kind: str | None = "generate") -> Any:
        if not self.ready:
            raise NotReady(self.load_error or "Model is loading; retry when /health answers 200")
        if kind is not None and self.loaded.kind != kind:
            what = "a text-generation model" if kind == "generate" else "an embedding model"
            raise NotFound(f"This route needs {what}; {self.model_name} is served as '{self.loaded.kind}'")
        return self.loaded

    def check_api_key(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise Unauthorized("Invalid or missing API key (send 'Authorization: Bearer <API_KEY>')")
