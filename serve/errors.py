"""The API's error contract: every failure is JSON `{"error": CODE, "detail": MESSAGE}` with a
status that tells the client whose fault it was (4xx: the request; 503/504: retry later)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.schemas import ErrorBody

logger = logging.getLogger("ray.serve")

# The error answers of the inference routes, for the OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed JSON.",
        404: "Unknown model; the detail lists the available ones.",
        413: "Body too large.",
        422: "Missing, empty, non-string or too long text.",
        503: "Overloaded or not ready; retry after `Retry-After` seconds.",
        504: "Inference did not finish within the configured timeout.",
    }.items()
}


class ApiError(Exception):
    """Raised by route handlers; rendered by `api_error_handler`."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers


class Overloaded(RuntimeError):
    """A model replica already holds its `max_pending_requests`: answered 503, never queued."""


class ModelTimeout(RuntimeError):
    """A request outlived its model's `timeout_s` on the replica: answered 504. The replica
    enforces it, so the deadline comes from the model's own config, whoever called."""


def check_text(text: str, max_chars: int) -> None:
    """What pydantic's schema cannot say about the text: not blank, not over the limit."""
    if not text.strip():
        raise ApiError(422, "invalid_request", "text must not be blank")
    if len(text) > max_chars:
        raise ApiError(
            422, "invalid_request", f"text has {len(text)} characters; the limit is {max_chars}"
        )


def error_response(
    status_code: int, error: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail}, status_code=status_code, headers=headers
    )


async def api_error_handler(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.error, exc.detail, exc.headers)


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    """Unparseable JSON is the client's syntax error (400); well-formed but wrong fields are 422."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "Request body is not valid JSON.")
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    return error_response(422, "invalid_request", detail)


HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


async def http_error_handler(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = HTTP_ERROR_CODES.get(exc.status_code, "invalid_request")
    return error_response(exc.status_code, error, str(exc.detail), exc.headers)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """What failed, never how: the exception (its type and text included) goes to the log."""
    logger.exception("Unhandled error in router")
    model = getattr(request.state, "model", None)
    where = f" serving model {model!r}" if model else ""
    return error_response(500, "internal", f"Internal error{where}; the server's log says why")


def json_api(title: str, description: str) -> FastAPI:
    """A FastAPI app with the API's error contract: the body limit, JSON errors, and every answer
    counted by ResponseCounter (outermost, so it counts BodySizeLimit's 413 too)."""
    from serve.metrics import ResponseCounter

    app = FastAPI(title=title, version="0.1.0", description=description)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(ResponseCounter)
    install_error_handlers(app)
    return app


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)


class BodySizeLimit:
    """Rejects bodies over `app.state.max_body_bytes` with 413 before any parsing.

    Checks Content-Length first, then counts streamed bytes, so a chunked upload is bounded too.
    Every body is read as JSON, whatever content type the client declared.
    """

    def __init__(self, app: ASGIApp, default_limit: int = 65_536) -> None:
        self.app = app
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.get("app").state if scope.get("app") is not None else None
        limit = getattr(state, "max_body_bytes", None) or self.default_limit
        headers = dict(scope.get("headers") or [])
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            # The API speaks JSON only; `curl -d` sends a form content type by default.
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers") or [] if k != b"content-type"
            ] + [(b"content-type", b"application/json")]
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return

        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._reject(send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        response = error_response(
            413, "body_too_large", f"Request body exceeds the limit of {limit} bytes."
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
