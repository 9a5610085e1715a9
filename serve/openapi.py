"""The OpenAPI document (`/docs.json`) as the services really answer.

BentoML documents each API with 200, 400, 404 and 500, the 400 body as BentoML's
`{"error", "detail"}` and the 200 body as any object. tiffin's services answer 400, 413, 415,
422, 503 and 504 too, every error as `{"error": string}` (tiffin.serve.uploads shapes them),
and never 404 on an API route; the 200 bodies have a fixed shape. This middleware rewrites the
document BentoML serves, from the tables below, so clients and schema-driven testers
(schemathesis, in tests/test_serve.py) read the truth. The speech service's WebSocket
`/transcribe/stream`, which OpenAPI cannot describe, is named in the extension `x-websockets`.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Message = dict[str, Any]

ERROR_BODY = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

# status -> when an API answers it (every API of both services)
ERRORS = {
    "400": "the form is malformed or not multipart, a field is missing, invalid or sent as a string instead of a "
           "file, or the upload is empty",
    "413": "the upload is larger than TIFFIN_MAX_UPLOAD_MB",
    "415": "a request content type the API does not take (send multipart/form-data)",
    "422": "the upload is not media in a container tiffin reads, or costs more to decode than the limits "
           "(TIFFIN_MAX_VIDEO_SECONDS, TIFFIN_MAX_VIDEO_PIXELS, TIFFIN_MAX_DECODE_PIXELS, TIFFIN_MAX_AUDIO_SECONDS, "
           "TIFFIN_MAX_DECODE_SECONDS)",
    "500": "a bug in tiffin (the server log has the traceback)",
    "503": "the model worker restarted while the request was in it; send it again",
    "504": "no answer within TIFFIN_TIMEOUT_S",
}

_LABEL = {"type": "object", "required": ["label", "score"],
          "properties": {"label": {"type": "string"}, "score": {"type": "number", "minimum": 0, "maximum": 1}}}
# an answer from media cut short says so ("truncated: only 0.80 s of the 2.80 s ... answered from that part")
_WARNINGS = {"type": "array", "items": {"type": "string"}}
# route -> the 200 body
ANSWERS = {
    "/classify": {"type": "object", "required": ["labels", "clips", "duration_s", "backbone"], "properties": {
        "labels": {"type": "array", "items": _LABEL, "minItems": 1}, "clips": {"type": "integer", "minimum": 1},
        "duration_s": {"type": "number", "minimum": 0}, "backbone": {"type": "string"}, "warnings": _WARNINGS}},
    "/transcribe": {"type": "object", "required": ["text", "duration_s", "backbone"], "properties": {
        "text": {"type": "string"}, "duration_s": {"type": "number", "minimum": 0}, "backbone": {"type": "string"},
        "warnings": _WARNINGS,
        "words": {"type": "array", "items": {"type": "object", "required": ["word", "start", "end"], "properties": {
            "word": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"}}}}}},
}


def truthful(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document with each tiffin API's real statuses and bodies."""
    for route, answer in ANSWERS.items():
        operation = spec.get("paths", {}).get(route, {}).get("post")
        if operation is None:
            continue
        if "requestBody" in operation:  # an upload is not optional, and not empty (400)
            operation["requestBody"]["required"] = True
            for media in operation["requestBody"].get("content", {}).values():
                form = _resolve(spec, media.get("schema", {}))
                for field in form.get("properties", {}).values():
                    if field.get("format") == "binary":
                        field["minLength"] = 1
                    # pydantic leaves an annotated field's bounds as its own `ge`/`le` (top_k):
                    # JSON Schema's words, so clients and testers see the bounds the API enforces
                    for theirs, ours in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"),
                                         ("lt", "exclusiveMaximum")):
                        if theirs in field:
                            field[ours] = field.pop(theirs)
        operation["responses"] = {
            "200": {"description": "the answer", "content": {"application/json": {"schema": answer}}},
            **{status: {"description": when, "content": {"application/json": {"schema": ERROR_BODY}}}
               for status, when in ERRORS.items()},
        }
    if "/transcribe" in spec.get("paths", {}):
        # OpenAPI 3 has no WebSockets: the speech service's live endpoint is named in an extension
        from tiffin.serve.speech_live import PATH, PROTOCOL

        spec["x-websockets"] = {PATH: PROTOCOL}
    schemas = spec.get("components", {}).get("schemas", {})
    text = json.dumps(spec.get("paths", {}))
    for unused in [name for name in schemas if f"#/components/schemas/{name}\"" not in text]:
        if unused in ("InvalidArgument", "NotFound", "InternalServerError"):
            del schemas[unused]
    return spec


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema, following one `$ref` into the document's components."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
    return schema


class TruthfulOpenApi:
    """ASGI middleware: `GET /docs.json` answered with `truthful()` of BentoML's document."""

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        held: list[Message] = []

        async def rewriting_send(message: Message) -> None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
                if start.get("status") == 200:
                    body = json.dumps(truthful(json.loads(body))).encode()
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewriting_send)
