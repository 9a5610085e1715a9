"""The fixes tiffin makes to BentoML internals (`PATCHES`, one row each, listed below), held to
the exact version they were written against.

All replace private BentoML code, so each is written against the source of one release
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
- private_control: circus's control endpoint was an unauthenticated TCP port on 127.0.0.1 whose
  `add` command ran a program as the server's user, for any local user; it and the pubsub
  endpoint are now Unix sockets in a 0700 directory of the server's user.
- quiet_refusals: every refused request (validation error, 413, client gone mid-body) logged a
  full traceback; now its access-log line is its one line, and 5xx keep their tracebacks.
- header_timeout: uvicorn (h11) waited for ever for a request head sent slowly or not at all
  (slowloris: each such client held a worker's connection and file descriptor); a connection
  whose head is not complete TIFFIN_HEADER_TIMEOUT_S after it opened (or after its last
  response) is closed.
- model_sessions: BentoML's client of the model worker replaced its aiohttp session every 100
  calls (and 300 s) and closed the old one with calls still running on it: under load those
  calls failed (503s; live streams closed 1013). The model worker's address never changes, so
  the session is kept.

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
      client text reaches a path;
    - a client that disconnects before its body ends was a 500 (a server fault in /metrics and
      the access log); a 400 here, logged as a refusal (quiet_refusals).
    """
    from _bentoml_impl import serde
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

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
            except ClientDisconnect:  # nobody reads the answer: the status is for the log and /metrics
                raise BadInput("the client closed the connection before its request body ended") from None

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


def _standalone_arbiter():
    from bentoml._internal.utils import circus

    return circus.create_standalone_arbiter


def _private_control_sockets() -> None:
    """BentoML's process manager (circus) took commands on a TCP port of 127.0.0.1 with no
    authentication: any local user could send it `add` and have a command run as the server's
    user. Here its control, pubsub and stats endpoints are Unix sockets in a fresh directory of
    mode 0700 (only the server's user can reach them, root aside), removed when the process exits.
    BentoML calls the function at serve time (`from ... import` inside serve_http), so replacing
    the module's attribute is enough; the service module that installs this is imported before."""
    import atexit
    import shutil
    import tempfile

    from bentoml._internal.utils import circus

    def create_standalone_arbiter(watchers: list, *, threaded: bool = False, **kwargs: Any) -> Any:
        # BentoML 1.4.40's body, with ipc:// endpoints in place of two reserved TCP ports
        folder = tempfile.mkdtemp(prefix="tiffin-circus-")  # mode 0700, whatever the umask
        atexit.register(shutil.rmtree, folder, ignore_errors=True)  # after circus closed them
        arbiter_cls = circus.ThreadedArbiter if threaded else circus.Arbiter
        return arbiter_cls(watchers, endpoint=f"ipc://{folder}/control", pubsub_endpoint=f"ipc://{folder}/pubsub",
                           stats_endpoint=f"ipc://{folder}/stats",  # used only with statsd, which BentoML leaves off
                           check_delay=kwargs.pop("check_delay", 10), **kwargs)

    circus.create_standalone_arbiter = create_standalone_arbiter


def _app_log_exception():
    from _bentoml_impl.server import app

    return app.log_exception


def _api_endpoint_wrapper():
    from _bentoml_impl.server import app

    return app.ServiceAppFactory.api_endpoint_wrapper


def _quiet_refusals() -> None:
    """BentoML logged every request it refused (a pydantic validation error, a BentoMLException
    under 500 such as UploadLimit's 413, a client gone mid-body) as an ERROR with a full
    traceback: 300 disconnects were 300 tracebacks, and real faults drowned in them. A refusal
    now leaves one line, its access-log line (status 4xx, path, trace id); the reason the client
    was sent goes to DEBUG. Every other exception (a 5xx) keeps BentoML's ERROR and traceback."""
    import sys

    from _bentoml_impl.server import app
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect

    logged = app.log_exception  # BentoML's: "Exception on PATH [METHOD]" and the traceback

    def log_exception(request: Any, exc_info: Any = True) -> None:
        exc = sys.exc_info()[1]  # called inside api_endpoint_wrapper's `except` blocks
        refused = isinstance(exc, (ValidationError, ClientDisconnect)) or (
            isinstance(exc, BentoMLException) and exc.error_code < 500)
        if not refused:
            return logged(request, exc_info)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        app.logger.debug("Refused %s %s: %s", request.method, request.url.path, reason)

    app.log_exception = log_exception


def _h11_protocol(attribute: str) -> Callable[[], Any]:
    def get():
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return getattr(H11Protocol, attribute)

    return get


def _uvicorn_http_protocol() -> str:
    """The HTTP protocol BentoML's uvicorn workers run (its `http="auto"`): h11's while httptools
    is not installed. Were it httptools', the header_timeout patch would not be in the path."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return f"{AutoHTTPProtocol.__module__}.{AutoHTTPProtocol.__qualname__}"


_HEAD_LATE = b"request head not received in time\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_HEAD_LATE), _HEAD_LATE))


def _header_timeout() -> None:
    """uvicorn (h11, what BentoML's workers run) gave a connection no time limit until its request
    head arrived: its keep-alive timer starts only after a response and any byte cancels it, so a
    client that connects and sends nothing, or a byte of request line every few seconds
    (slowloris), held a connection and a file descriptor of a worker for as long as it liked, and
    enough such clients use up the worker's descriptors. Here a timer starts when a connection is
    made, and again when a response ends on a connection kept alive; unless a whole request head
    (h11's Request event) has arrived within TIFFIN_HEADER_TIMEOUT_S, the connection is closed,
    after a 408 if part of a head came. The body is not timed (a slow upload keeps going), and
    after a response the wait is max(keep-alive, TIFFIN_HEADER_TIMEOUT_S), so an idle keep-alive
    connection is not cut sooner than uvicorn's keep-alive timeout would cut it. Each worker (API
    and model) reads the setting when the service module installs this; H11Protocol is patched in
    place, so uvicorn's `http="auto"`, resolved after that import, runs the patched methods."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from tiffin.serve.settings import read_settings

    timeout_s = read_settings().header_timeout_s
    made, lost = H11Protocol.connection_made, H11Protocol.connection_lost
    handled, responded = H11Protocol.handle_events, H11Protocol.on_response_complete

    def stop(self: Any) -> None:
        timer = self.__dict__.pop("_tiffin_head_timer", None)
        if timer is not None:
            timer.cancel()

    def start(self: Any, seconds: float) -> None:
        stop(self)
        self._tiffin_head_timer = self.loop.call_later(seconds, timed_out, self)

    def timed_out(self: Any) -> None:
        self.__dict__.pop("_tiffin_head_timer", None)
        if self.transport.is_closing():
            return
        conn = self.conn
        if conn.our_state is h11.IDLE and conn.their_state is h11.IDLE and conn.trailing_data[0]:
            self.transport.write(_REQUEST_TIMEOUT)  # part of a head came: say why (h11 has no request to answer)
        self.logger.debug("%s:%s - no request head in %s s; connection closed", *(self.client or ("?", "?")),
                          timeout_s)
        try:
            conn.send(h11.ConnectionClosed())  # as uvicorn's keep-alive timeout closes
        except h11.ProtocolError:
            pass
        self.transport.close()

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        start(self, timeout_s)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        stop(self)
        lost(self, exc)

    def handle_events(self: Any) -> None:
        scope = self.scope
        handled(self)
        if self.scope is not scope:  # uvicorn sets a new scope for each h11 Request event: a head arrived
            stop(self)

    def on_response_complete(self: Any) -> None:
        if not self.transport.is_closing():  # kept alive: the next head is timed (before uvicorn's own
            start(self, max(self.timeout_keep_alive, timeout_s))  # handle_events parses a pipelined one)
        responded(self)

    for function in (connection_made, connection_lost, handle_events, on_response_complete):
        setattr(H11Protocol, function.__name__, function)


def _session_manager(attribute: str) -> Callable[[], Any]:
    def get():
        from _bentoml_impl.client.proxy2 import SessionManager

        return getattr(SessionManager, attribute)

    return get


def _keep_model_sessions() -> None:
    """BentoML's client of a dependency (API worker -> model worker) replaced its aiohttp session every
    100 calls and 300 s, closing the old one with calls still running on it (ServerDisconnectedError:
    503s, live streams closed 1013). The model worker's address does not change: the session is kept."""
    from _bentoml_impl.client.proxy2 import SessionManager

    def _should_refresh(self: Any) -> bool:
        return False

    SessionManager._should_refresh = _should_refresh


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
    "private_control": ("circus's control endpoint is a Unix socket only the server's user reaches, not a TCP port",
                        [("create_standalone_arbiter", _standalone_arbiter, "7599114edfbd5652")],
                        _private_control_sockets),
    "quiet_refusals": ("a refused request (4xx, client gone mid-body) logs one line, not a traceback",
                       [("http_app.log_exception", _app_log_exception, "8e37ab2b4433dff1"),
                        ("ServiceAppFactory.api_endpoint_wrapper", _api_endpoint_wrapper, "18842e99e6086c0f")],
                       _quiet_refusals),
    "header_timeout": ("a connection whose request head is not complete in TIFFIN_HEADER_TIMEOUT_S is closed",
                       [("uvicorn's HTTP protocol (h11; httptools must not be installed)", _uvicorn_http_protocol,
                         "5c3a1a94a8ceb237"),
                        ("uvicorn 0.54.0's H11Protocol.connection_made", _h11_protocol("connection_made"),
                         "6efb565ff3d36b91"),
                        ("uvicorn 0.54.0's H11Protocol.connection_lost", _h11_protocol("connection_lost"),
                         "dbb688fa2b386000"),
                        ("uvicorn 0.54.0's H11Protocol.data_received", _h11_protocol("data_received"),
                         "e03b145518ca44aa"),
                        ("uvicorn 0.54.0's H11Protocol.handle_events", _h11_protocol("handle_events"),
                         "e63a9d1492e3efe7"),
                        ("uvicorn 0.54.0's H11Protocol.on_response_complete", _h11_protocol("on_response_complete"),
                         "1fbb8f48c6a1afc4")],
                       _header_timeout),
    "model_sessions": ("calls to the model worker in flight are not cut by BentoML's session refresh",
                       [("SessionManager.get_session", _session_manager("get_session"), "eb743006199bc0b5"),
                        ("SessionManager._should_refresh", _session_manager("_should_refresh"), "b9743cf3bef9f98a")],
                       _keep_model_sessions),
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
    from _bentoml_impl.client.proxy2 import SessionManager
    from _bentoml_impl.server import app
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from bentoml._internal.utils import circus
    from circus.arbiter import Arbiter
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return {"request_timers": TimeoutMiddleware.__call__.__module__ == __name__,
            "strict_forms": all(serde.ALL_SERDE[k].__module__ == __name__ for k in _FORM_TYPES),
            "drain_in_order": Arbiter._stop_watchers.__module__ == __name__,
            "private_control": circus.create_standalone_arbiter.__module__ == __name__,
            "quiet_refusals": app.log_exception.__module__ == __name__,
            "header_timeout": AutoHTTPProtocol is H11Protocol
            and H11Protocol.on_response_complete.__module__ == __name__,
            "model_sessions": SessionManager._should_refresh.__module__ == __name__}
