"""What the services do with an upload before and after the model: size limit, error answers.

Errors a client caused are answered as `{"error": REASON}` with a 4xx status (never a 500),
and the reason never shows a server path: uploads live in BentoML's per-request temporary
directory, which it removes after the response.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable

from tiffin.errors import MediaError

Scope = dict[str, Any]
Message = dict[str, Any]


class UploadError(Exception):
    """A request the service refuses: HTTP status and a reason for the client."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def check_upload(path: Path, kind: str) -> None:
    """Refuse an empty upload before any decoder sees it."""
    if path.stat().st_size == 0:
        raise UploadError(400, f"the {kind} upload is empty (0 bytes); send the file's bytes as multipart field '{kind}'")


def media_error(err: MediaError, kind: str) -> UploadError:
    """A decoder's verdict on an upload, as a 422 whose reason names the field, not the temp file."""
    return UploadError(422, f"{kind}: {err.reason.replace(err.path, 'the upload')}")


@contextmanager
def model_call():
    """A call to the model worker that loses its connection (the worker died and BentoML is
    restarting it) is a 503 the client may retry, not a 500."""
    import aiohttp

    try:
        yield
    except (aiohttp.ClientConnectionError, ConnectionError):
        raise UploadError(503, "the model worker restarted while this request was in it; send it again") from None


def error_response(err: UploadError):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": err.reason}, status_code=err.status)


def upload_name(client_name: str | None) -> str:
    """The name an upload is stored under: `upload` plus the client's extension when it is a
    plain one (`.mp4`, `.flac`; decoders look at the bytes, the extension is only a hint)."""
    suffix = re.search(r"\.[A-Za-z0-9]{1,8}$", client_name or "")
    return "upload" + (suffix.group(0).lower() if suffix else "")


class UploadLimit:
    """ASGI middleware: a request body larger than `max_bytes` gets 413, decided while it streams in.

    A declared Content-Length over the limit is refused before a byte is read. Otherwise the body
    is counted as it arrives, and the read that passes the limit fails with a 413 BentoMLException,
    which BentoML answers (and counts in /metrics) as such. 4xx bodies leave as `{"error": ...}`.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return f"upload larger than the limit of {self.max_bytes / (1024 * 1024):.3g} MB (TIFFIN_MAX_UPLOAD_MB)"

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else the client waits and sends nothing
                await _drain(receive)
            return await _send_json(send, 413, {"error": self._message()})
        seen, over = 0, False

        async def counted_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = message.get("more_body", False)  # the rest is drained after the answer
                    from http import HTTPStatus

                    from bentoml.exceptions import BentoMLException

                    raise BentoMLException(self._message(), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return message

        held: list[Message] = []  # a 4xx answer being collected, to rewrite its body

        async def error_shaping_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                held.append(message)
            elif held:
                held.append(message)
                if not message.get("more_body", False):
                    await _send_error_object(held, send)
                    held.clear()
            else:
                await send(message)

        await self.app(scope, counted_receive, error_shaping_send)
        if over:
            await _drain(receive)


# Bytes of a refused body read and dropped so that simple clients, which send the whole body
# before they read the answer, get the 413 instead of a broken pipe. Past this, the connection
# is closed on them.
DRAIN_BYTES = 64 * 1024 * 1024


async def _drain(receive: Callable[[], Awaitable[Message]]) -> None:
    drained = 0
    while drained <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, obj: Any,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Send `obj` as JSON; `headers` are kept (an `Allow` of a 405, say), less their own length and type."""
    body = json.dumps(obj).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_error_object(messages: list[Message], send: Callable[[Message], Awaitable[None]]) -> None:
    """Send a held 4xx answer as `{"error": string}`, the one error body of these services (and
    of their OpenAPI document, tiffin.serve.openapi): BentoML's own refusals come as
    `[{"error": ...}]`, or as `{"error", "detail": [pydantic errors]}` for a bad field."""
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    await _send_json(send, start["status"], {"error": error_text(body, start["status"])}, start.get("headers", []))


def error_text(body: bytes, status: int) -> str:
    """The one-line reason in a 4xx body of any of the shapes BentoML and Starlette send."""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = body.decode("utf-8", "replace").strip()
    if isinstance(decoded, list) and len(decoded) == 1:
        decoded = decoded[0]
    if isinstance(decoded, dict):
        detail = decoded.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(d, dict) and "msg" in d for d in detail):
            # pydantic's validation errors: "top_k: Input should be greater than or equal to 1"
            return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ())) or 'body'}: {d['msg']}" for d in detail)
        if isinstance(decoded.get("error"), str):
            return decoded["error"]
        decoded = decoded.get("detail") or ""
    if isinstance(decoded, str) and decoded:
        return decoded
    from http import HTTPStatus

    return HTTPStatus(status).phrase
