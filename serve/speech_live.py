"""Live transcription over a WebSocket: `/transcribe/stream` on the speech service, in Vosk's protocol.

A client opens `ws://HOST:PORT/transcribe/stream`, may send a text message
`{"config": {"sample_rate": 16000}}` (the rate of its audio, 8000-192000 Hz, default the model's;
`"words": false` leaves the word list out of results; other keys are ignored, as Vosk does), then
binary messages of 16-bit little-endian mono PCM, then `{"eof": 1}`. Every audio message gets
exactly one text answer, as vosk-server gives (its clients send and receive in lockstep):
`{"text": ..., "result": [{"word", "start", "end", "conf"}]}` when that audio completed a window
of the model (the words it commits, in seconds from the stream's start), else
`{"partial": ...}`, the tentative text of what is not committed yet. After eof comes one last
result with the rest (its text may be empty) and the close, 1000. The results joined are
`tiffin predict`'s transcript of the same audio: both run tiffin.speech_stream.Transcription.

Each message is processed before the next is read, off the event loop (a worker thread; the
model calls go to the model worker, batched with every other request's), so a client that
sends faster than real time waits for its answers instead of filling the server's memory, and
the worker keeps serving the others. Errors close the stream with a code and a one-line reason
(`CLOSE_CODES`). A partial result costs a model call on the window being filled (up to the
model's chunk, 30 s), so one is computed again only once TIFFIN_STREAM_PARTIAL_S of new audio
has come and as much time has passed, and no sooner than twice the time the last one took; between,
the last one is repeated. So a client sending faster than real time costs little more than the
model's windows, and under load partials come less often instead of every stream falling behind.

Run: `tiffin serve ARTIFACT`, then `tiffin stream ws://127.0.0.1:3000 recording.wav`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Awaitable, Callable

import numpy as np

Message = dict[str, Any]

PATH = "/transcribe/stream"
RATES = (8000, 192000)  # sample rates a client may declare (Hz)
MAX_MESSAGE_BYTES = 1 << 20  # one binary message: 32 s of 16 kHz audio; clients send 0.1-0.25 s
RESAMPLE_SECONDS = 0.1  # audio at another rate is resampled in blocks of this much output (latency)

# code -> when the server closes with it (README's "Live transcription" and /docs.json list this table)
CLOSE_CODES = {
    1000: "after the final result that answers {\"eof\": 1}",
    1003: "a text message that is neither {\"config\": ...} nor {\"eof\": 1}",
    1007: "a text message that is not JSON, or a config with a bad sample_rate (an integer from 8000 to 192000) "
          "or words (true or false), or a sample_rate changed once audio came",
    1008: "no message for TIFFIN_STREAM_IDLE_S seconds, audio past TIFFIN_MAX_AUDIO_SECONDS (after the final "
          "result of the audio up to the limit), or live transcription off (TIFFIN_MAX_STREAMS=0)",
    1009: "a binary message over 1 MiB",
    1011: "a bug in tiffin (the server log has the traceback)",
    1013: "try again later: the worker is starting, already serves TIFFIN_MAX_STREAMS streams, or its model "
          "worker restarted",
}

# where the speech service's live endpoint is described in /docs.json (OpenAPI cannot describe a WebSocket)
PROTOCOL = {
    "summary": "live transcription (Vosk's WebSocket protocol)",
    "description": "send {\"config\": {\"sample_rate\": 16000}} (optional), binary messages of 16-bit little-endian "
                   "mono PCM, then {\"eof\": 1}; each audio message is answered with {\"partial\": text} or "
                   "{\"text\": text, \"result\": [{\"word\", \"start\", \"end\", \"conf\"}]}, eof with the last "
                   "result, then the close (1000). Client: `tiffin stream URL FILE`.",
    "docs": "README.md, section \"Live transcription\"",
    "close_codes": {str(code): when for code, when in CLOSE_CODES.items()},
}

logger = logging.getLogger("tiffin.serve.speech_live")

# the SpeechRecognizer BentoML built in this worker process (its __init__ registers it): the
# middleware is built before the service instance, so it looks it up at each connection
_SERVED: list[Any] = []


def register(recognizer: Any) -> None:
    """Make `recognizer` (a tiffin.serve.speech.SpeechRecognizer) the one live streams use."""
    _SERVED[:] = [recognizer]


def served() -> Any | None:
    """The registered SpeechRecognizer, None while the worker is starting."""
    return _SERVED[0] if _SERVED else None


class Closing(Exception):
    """The stream ends with this close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class _Gone(Exception):
    """The client disconnected."""


def _words(segments: list) -> list[dict[str, Any]]:
    return [w for segment in segments for w in segment.words]


def _rate(value: Any) -> int:
    """A config's sample_rate: an integer (48000.0 too) in RATES.

    Raises:
        Closing: 1007 otherwise.
    """
    integral = not isinstance(value, bool) and (isinstance(value, int)
                                                or (isinstance(value, float) and value.is_integer()))
    if not integral or not RATES[0] <= value <= RATES[1]:
        shown = json.dumps(value)[:20]
        raise Closing(1007, f"config.sample_rate {shown}: give the audio's rate in Hz, an integer from {RATES[0]} "
                            f"to {RATES[1]}")
    return int(value)


class LiveStream:
    """One client's stream (synchronous; the middleware runs each call in a worker thread): audio
    in, Vosk's answers out.

    `host`: the service's tiffin.host.SpeechPredictor; `partial_seconds`: new audio, and time
    (seconds), before a partial is computed again; `max_seconds`: the most audio a stream may send.
    """

    def __init__(self, host: Any, partial_seconds: float, max_seconds: float):
        self.run = host.transcription(windows_per_call=1)  # each window to the model as soon as it is whole
        self.model_rate = host.spec.sample_rate
        self.rate = self.model_rate
        self.words = True
        self.max_seconds = max_seconds
        self.partial_seconds = partial_seconds
        self.partial_every = max(1, int(partial_seconds * self.model_rate))
        self.partial_at = 0  # run.samples when the last partial was computed
        self.partial_time, self.partial_cost = -math.inf, 0.0  # when it was computed, and the seconds it took
        self.partial = ""
        self.resampler = None
        self.odd = b""  # a message's odd byte, the first of the next one's first sample
        self.received = 0  # samples at the client's rate
        self.over: str | None = None  # set once audio went past max_seconds: the reason to close with

    def configure(self, config: Any) -> None:
        """Apply a `{"config": ...}` message's object.

        Raises:
            Closing: 1007 for a bad value, or a new sample_rate once audio came.
        """
        if not isinstance(config, dict):
            raise Closing(1007, "config: give an object, e.g. {\"config\": {\"sample_rate\": 16000}}")
        if "sample_rate" in config:
            rate = _rate(config["sample_rate"])
            if rate != self.rate and (self.received or self.odd):
                raise Closing(1007, f"config.sample_rate {rate}: the stream's audio is already at {self.rate} Hz; "
                                    "send the config before the audio")
            self.rate = rate
        if "words" in config:
            if not isinstance(config["words"], bool):
                raise Closing(1007, "config.words: give true (results list their words) or false")
            self.words = config["words"]

    def audio(self, data: bytes) -> dict[str, Any]:
        """The answer to a binary message: the result it completes, else the partial. Past the
        audio limit: the final result of the audio up to it, and `over` says why the stream closes."""
        data = self.odd + data
        self.odd = data[len(data) // 2 * 2 :]
        samples = np.frombuffer(data, "<i2", count=len(data) // 2).astype(np.float32) / 32768.0
        room = int(self.max_seconds * self.rate) - self.received
        if len(samples) > room:
            samples = samples[: max(0, room)]
            self.over = (f"audio longer than the limit of {self.max_seconds:g} s (TIFFIN_MAX_AUDIO_SECONDS); the "
                         "final result covers the audio up to it")
        self.received += len(samples)
        segments = self.run.push(self._at_model_rate(samples))
        if self.over is not None:
            return self._result(segments + self._finish())
        if segments:
            self.partial, self.partial_at = "", self.run.samples
            return self._result(segments)
        now = time.monotonic()
        if (self.run.samples - self.partial_at >= self.partial_every
                and now - self.partial_time >= max(self.partial_seconds, 2 * self.partial_cost)):
            self.partial, self.partial_at = self.run.partial(), self.run.samples
            self.partial_time, self.partial_cost = now, time.monotonic() - now
        return {"partial": self.partial}

    def end(self) -> dict[str, Any]:
        """The answer to eof: the result of the rest (text may be empty)."""
        return self._result(self._finish())

    def _finish(self) -> list:
        if self.resampler is not None:
            tail = self.resampler.flush()
            self.resampler = None
            segments = self.run.push(tail) if len(tail) else []
        else:
            segments = []
        return segments + self.run.finish()

    def _at_model_rate(self, samples: np.ndarray) -> np.ndarray:
        if self.rate == self.model_rate:
            return samples
        if self.resampler is None:
            from tiffin.audio_io import Resampler

            # blocks of about RESAMPLE_SECONDS of output: the file path's 4096-window blocks would
            # hold back up to 41 s of a 44.1 kHz stream before the first sample came out
            out_per_window = self.model_rate // math.gcd(self.rate, self.model_rate)
            block = max(1, math.ceil(RESAMPLE_SECONDS * self.model_rate / out_per_window))
            self.resampler = Resampler(self.rate, self.model_rate, block=block)
        return self.resampler.push(samples)

    def _result(self, segments: list) -> dict[str, Any]:
        words = _words(segments)
        return {"text": " ".join(w["word"] for w in words), **({"result": words} if self.words and words else {})}


def _reason(text: str) -> str:
    """A close reason fits a control frame: 123 bytes of UTF-8."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."


class LiveTranscription:
    """ASGI middleware: WebSocket connections to `/transcribe/stream` get live transcription
    (Vosk's protocol, see the module docstring); everything else goes to the service."""

    def __init__(self, app: Callable):
        self.app = app
        self.open = 0  # streams open in this worker

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "websocket" or scope.get("path") != PATH:
            return await self.app(scope, receive, send)
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})  # accepted first: a refusal before it has no code or reason
        try:
            await self._serve(receive, send)
            await _close(send, 1000, "")
        except Closing as closing:
            await _close(send, closing.code, closing.reason)
        except _Gone:
            pass

    async def _serve(self, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
                     ) -> None:
        recognizer = served()
        if recognizer is None:
            raise Closing(1013, "the speech service is still starting; connect again in a few seconds")
        settings = recognizer.settings
        if settings.max_streams == 0:
            raise Closing(1008, "live transcription is off on this server (TIFFIN_MAX_STREAMS=0)")
        if self.open >= settings.max_streams:
            raise Closing(1013, f"{self.open} live streams are open in this worker, the most it takes "
                                "(TIFFIN_MAX_STREAMS); connect again later")
        self.open += 1
        try:
            stream = LiveStream(recognizer.host, settings.stream_partial_s, settings.limits.audio_seconds)
            while True:
                message = await _next(receive, settings.stream_idle_s)
                if message.get("bytes") is not None:
                    data = message["bytes"]
                    if len(data) > MAX_MESSAGE_BYTES:
                        raise Closing(1009, f"a message of {len(data)} bytes; send audio in messages of at most "
                                            "1 MiB (0.1 s each is usual)")
                    await _answer(send, await _in_thread(stream.audio, data))
                    if stream.over is not None:
                        raise Closing(1008, stream.over)
                elif _text_message(message, stream):
                    await _answer(send, await _in_thread(stream.end))
                    return
        finally:
            self.open -= 1


def _text_message(message: Message, stream: LiveStream) -> bool:
    """Apply a text message's config; True when it is eof.

    Raises:
        Closing: 1007 for text that is not JSON or a bad config, 1003 for anything else.
    """
    try:
        obj = json.loads(message.get("text") or "")
    except ValueError as err:
        raise Closing(1007, f"a text message that is not JSON ({err}); send {{\"config\": ...}} or {{\"eof\": 1}}")
    if not isinstance(obj, dict) or not ("config" in obj or "eof" in obj):
        raise Closing(1003, "a text message that is neither {\"config\": ...} nor {\"eof\": 1}; send audio as "
                            "binary messages of 16-bit PCM")
    if "config" in obj:
        stream.configure(obj["config"])
    return "eof" in obj


async def _next(receive: Callable[[], Awaitable[Message]], idle_s: float) -> Message:
    """The client's next message.

    Raises:
        Closing: 1008 when none comes within `idle_s`.
        _Gone: the client disconnected.
    """
    import asyncio

    try:
        message = await asyncio.wait_for(receive(), idle_s)
    except asyncio.TimeoutError:
        raise Closing(1008, f"no message for {idle_s:g} s (TIFFIN_STREAM_IDLE_S); the stream is closed") from None
    if message["type"] == "websocket.disconnect":
        raise _Gone()
    return message


async def _in_thread(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`function(*args)` in a worker thread (the model calls block), with its failures as closes.

    Raises:
        Closing: 1013 when the model worker restarted, 1011 for a bug (logged with its traceback).
    """
    import anyio

    from tiffin.serve.uploads import UploadError

    try:
        return await anyio.to_thread.run_sync(function, *args)
    except UploadError as err:  # the model worker restarted under the call (tiffin.serve.uploads.model_call)
        logger.warning("live transcription: %s (%r)", err.reason, err.__context__)
        raise Closing(1013, _reason(err.reason)) from None
    except Exception:
        logger.exception("live transcription failed")
        raise Closing(1011, "internal error (a bug in tiffin: the server log has the traceback)") from None


async def _answer(send: Callable[[Message], Awaitable[None]], answer: dict[str, Any]) -> None:
    try:
        await send({"type": "websocket.send", "text": json.dumps(answer, ensure_ascii=False)})
    except OSError:  # uvicorn's ClientDisconnected: the client went away while its answer was computed
        raise _Gone() from None


async def _close(send: Callable[[Message], Awaitable[None]], code: int, reason: str) -> None:
    try:
        await send({"type": "websocket.close", "code": code, "reason": _reason(reason)})
    except OSError:
        pass
