"""The one place where errors become HTTP responses: `{"error": "...", "param"?: "..."}` bodies, which
huggingface_hub shows to the user. Unexpected exceptions are logged and answered with a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, ProgrammingError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import ControlPlaneError

log = logging.getLogger(__name__)


def error_response(status: int, message: str, *, param: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if param:
        body["param"] = param
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _describe(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        details.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    if any(d["type"] == "json_invalid" for d in details):
        return "request body is not valid JSON", details
    parts = [f"{'.'.join(d['loc']) or 'body'}: {d['msg']}" for d in details[:5]]
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, details


def install(app: FastAPI) -> None:
    @app.exception_handler(ControlPlaneError)
    async def _domain(_: Request, exc: ControlPlaneError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _describe(list(exc.errors()))
        return error_response(422, message, detail=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    # Connection failures (OperationalError) and a schema behind the code (ProgrammingError: undefined table on
    # PostgreSQL) are conditions of the deployment, not of the request.
    @app.exception_handler(OperationalError)
    @app.exception_handler(ProgrammingError)
    async def _database(_: Request, exc: OperationalError | ProgrammingError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        return error_response(503, "database unavailable or its schema is not migrated; retry shortly")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")
