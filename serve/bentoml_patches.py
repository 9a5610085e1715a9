"""Three fixes tiffin makes to BentoML internals, held to the exact version they were written against.

Both replace private BentoML code, so each is written against the source of one release
(BENTOML_VERSION, pinned in pyproject.toml and constraints.txt) and fingerprinted: before a
patch is applied, the sha256 of every BentoML function it replaces or relies on is compared
with the one recorded here. A BentoML whose code differs stops the service at start with a
one-line error naming its version; a patch never switches itself off silently. `active()` says
which patches are in; tests/test_serve.py asserts each one is.

- request_timers: BentoML's request timeout kept every finished request in memory (about 16 KB
  a request in each worker, for TIFFIN_TIMEOUT_S); its timer is cancelled when the request ends.
- strict_forms: file fields given as strings (BentoML fetched them as URLs), malformed multipart
  bodies and non-UTF-8 form fields (500s) become 400s; uploads are stored as `upload.EXT`.
- drain_in_order: on SIGTERM (`docker stop`, Ctrl-C) BentoML's process manager (circus, from
  BentoML's `kantoku` package) stopped the API and model workers at once: the model worker had
  no request of its own in flight and exited while the API workers were still decoding uploads,
  so every request in flight ended 503. The API workers now stop (and drain) first.

Applied by the services at import (`install()`), and checked by `tiffin serve` before it starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any, Callable

from tiffin.errors import TiffinError

BENTOML_VERSION = "1.4.40"


class PatchMismatch(TiffinError):
    """The installed BentoML is not the code a patch was written against."""


def _timeout_middleware_call():
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    return TimeoutMiddleware.__call__


def _multipart(attribute: str) -> Callable[[], Any]:
    def get():
        from _bentoml_impl import serde

        return getattr(serde.MultipartSerde, attribute)

    return get


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _serde_table() -> str:
    """Which classes parse form bodies: the patch subclasses the one serving both."""
    from _bentoml_impl import serde

    return ";".join(f"{kind}={serde.ALL_SERDE[kind].__module__}.{serde.ALL_SERDE[kind].__qualname__}"
                    for kind in _FORM_TYPES)


def _cancel_finished_request_timers() -> None:
    """BentoML's TimeoutMiddleware schedules `loop.call_later(timeout, ...)` for each request and
    never cancels it. An asyncio timer keeps a copy of the context it was scheduled in, and that
    context holds the request's OpenTelemetry span, and through it the request, connection and
    response objects, until the timer fires: TIFFIN_TIMEOUT_S (300 s) later. A speech server at
    65 req/s grew by about 16 KB per request in each worker, 150 -> 410 MB in 5 minutes. Here
    the timer is cancelled when the request ends; timeouts behave as before (504 when no answer
    started in time)."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from starlette.responses import JSONResponse

    async def __call__(self: Any, scope: dict, receive: Any, send: Any) -> None:
        # BentoML 1.4.40's body, plus `timer` and the `finally` that cancels it
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except asyncio.TimeoutError:
            if fut.cancel():
                response = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                await response(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    TimeoutMiddleware.__call__ = __call__


def _strict_form_parsing() -> None:
    """Make BentoML's form parsing refuse what it would otherwise mishandle:

    - a file field sent as a string is fetched as a URL by BentoML; here it is refused (400), so
      the server never reads a location a client names;
    - a malformed multipart body (bad or missing boundary) surfaces from Starlette as an HTTP 400
      that BentoML turns into a 500; here it stays a 400 with the parser's reason;
    - a non-file field holding non-UTF-8 bytes was a 500 (found by tests/test_fuzz.py); a 400 here;
    - BentoML names the upload's temporary file after the client's file name (a 300-character
      name was a 500); here the client's name is replaced by `upload` plus its extension, so no
      client text reaches a path.
    """
    from _bentoml_impl import serde
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    from tiffin.serve.uploads import upload_name

    class StrictMultipartSerde(serde.MultipartSerde):

        @staticmethod
        async def ensure_file(obj: Any) -> UploadFile:
            if isinstance(obj, UploadFile):
                obj.filename = upload_name(obj.filename)
                return obj
            raise BadInput("file fields take an uploaded file (a multipart file part), not a string or URL")

        async def parse_request(self, request: Any, cls: type) -> Any:
            try:
                return await super().parse_request(request, cls)
            except HTTPException as exc:
                raise BadInput(f"malformed form body: {exc.detail}") from None
            except UnicodeDecodeError:  # a form field (not a file) whose bytes are not text
                raise BadInput("a form field holds bytes that are not UTF-8 text; send files as file parts") from None

    serde.ALL_SERDE["multipart/form-data"] = StrictMultipartSerde  # type: ignore[index]
    serde.ALL_SERDE["application/x-www-form-urlencoded"] = StrictMultipartSerde  # type: ignore[index]


def _stop_watchers():
    from circus.arbiter import Arbiter

    return Arbiter._stop_watchers


def _drain_api_first() -> None:
    """Stop BentoML's API watcher (`service`: the uvicorn workers answering HTTP) before the
    services it calls (`service_NAME`): uvicorn stops accepting, finishes every request in flight
    (their model calls still answered), exits; only then do the model workers stop. The arbiter
    process imports the service module (to find its dependencies), so the patch is in effect
    where the stopping happens. Measured in a container: 6 requests in flight at `docker stop`
    were all 503 before, all 200 after (tests/test_serve.py checks it on `tiffin serve`)."""
    from circus.arbiter import Arbiter
    from tornado import gen

    @gen.coroutine
    def _stop_watchers(self: Any, close_output_streams: bool = False, watcher_iter_func: Any = None) -> Any:
        watchers = list((watcher_iter_func or self.iter_watchers)(reverse=False))
        api = [w for w in watchers if w.name == "service"]
        yield gen.multi([w._stop(close_output_streams) for w in api])
        yield gen.multi([w._stop(close_output_streams) for w in watchers if w not in api])

    Arbiter._stop_watchers = _stop_watchers


# name -> (what it fixes, [(what it relies on, getter, sha256 prefix of its source)], apply)
PATCHES: dict[str, tuple[str, list[tuple[str, Callable[[], Any], str]], Callable[[], None]]] = {
    "request_timers": ("cancels finished requests' timeout timers (a 16 KB per request leak)",
                       [("TimeoutMiddleware.__call__", _timeout_middleware_call, "fd8b9e3da28ed2b4")],
                       _cancel_finished_request_timers),
    "strict_forms": ("400s instead of URL fetches and 500s on bad form bodies",
                     [("MultipartSerde.ensure_file", _multipart("ensure_file"), "962fb19eb99f95a5"),
                      ("MultipartSerde.parse_request", _multipart("parse_request"), "65de1b4c289aac56"),
                      ("serde.ALL_SERDE's form entries", _serde_table, "c3af8ca33ad5f100")],
                     _strict_form_parsing),
    "drain_in_order": ("requests in flight at SIGTERM finish (API workers stop before the model worker)",
                       [("circus Arbiter._stop_watchers", _stop_watchers, "dccaa68cd7e55d44")],
                       _drain_api_first),
}
_applied: set[str] = set()


def _fingerprint(value: Any) -> str:
    text = inspect.getsource(value) if callable(value) else str(value)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check(name: str) -> None:
    """Raise PatchMismatch unless the installed BentoML has the code patch `name` replaces."""
    from importlib.metadata import version

    if name in _applied:  # this process replaced that code itself
        return
    installed = version("bentoml")
    what, relies_on, _ = PATCHES[name]
    for label, get, expected in relies_on:
        try:
            found = _fingerprint(get())
        except (AttributeError, ImportError, KeyError, OSError, TypeError):
            found = "missing"
        if found != expected:
            raise PatchMismatch(f"BentoML {installed}: tiffin's {name} fix ({what}) was written against BentoML "
                                f"{BENTOML_VERSION} and {label} differs; install bentoml=={BENTOML_VERSION} "
                                "(pip install -c constraints.txt 'tiffin[serve]')")


def install() -> None:
    """Check, then apply every patch (idempotent)."""
    for name, (_, _, apply) in PATCHES.items():
        if name in _applied:
            continue
        check(name)
        apply()
        _applied.add(name)


def active() -> dict[str, bool]:
    """Which patches are in, checked on BentoML's objects themselves (not on a flag of ours)."""
    from _bentoml_impl import serde
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from circus.arbiter import Arbiter

    return {"request_timers": TimeoutMiddleware.__call__.__module__ == __name__,
            "strict_forms": all(serde.ALL_SERDE[k].__module__ == __name__ for k in _FORM_TYPES),
            "drain_in_order": Arbiter._stop_watchers.__module__ == __name__}
