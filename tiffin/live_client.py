"""The live transcription client: a recording sent to a speech server's `/transcribe/stream` as a
live source (Vosk's WebSocket protocol, tiffin.serve.speech_live), the server's answers back.

What `tiffin stream URL FILE` runs, and the Python API's `tiffin.stream_file`:

    >>> for answer in tiffin.stream_file("ws://127.0.0.1:3000", "talk.wav", realtime=True):
    ...     print(answer.get("partial", answer.get("text")))

Torch-free; the `websockets` package is imported when a stream starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from tiffin.errors import TiffinError

PATH = "/transcribe/stream"  # tiffin.serve.speech_live.PATH (the serving stage is not imported here)
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class StreamError(TiffinError):
    """The server could not be reached, or closed the stream with an error (`code`, `reason`)."""

    def __init__(self, message: str, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code, self.reason = code, reason


def stream_url(url: str) -> str:
    """The WebSocket URL of a server's live endpoint: `ws://host:port`, `http://host:port` or
    `host:port`, with or without the path `/transcribe/stream` (a path before it is kept: a proxy's
    prefix).

    Raises:
        TiffinError: not a ws, wss, http or https URL.
    """
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    if parts.scheme not in _SCHEMES or not parts.netloc:
        raise TiffinError(f"{url}: give the server's address, e.g. ws://127.0.0.1:3000 or http://127.0.0.1:3000")
    path = parts.path if parts.path.endswith(PATH) else parts.path.rstrip("/") + PATH
    return urlunsplit((_SCHEMES[parts.scheme], parts.netloc, path, parts.query, ""))


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples as 16-bit little-endian PCM, quantised as soundfile's PCM_16 writer does
    (libsndfile: floor(x * 32768), clipped to [-32768, 32767]), so that a stream's samples equal a
    16-bit wav's of the same audio, and so its transcript `tiffin predict`'s of that wav."""
    scaled = np.floor(np.asarray(samples, dtype=np.float32) * np.float32(32768.0))
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def _chunks(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decoded blocks regrouped into pieces of `size` samples (the last one shorter)."""
    held, held_len = [], 0
    for block in blocks:
        held.append(block)
        held_len += len(block)
        if held_len >= size:
            joined = np.concatenate(held)
            cut = len(joined) // size * size
            yield from (joined[k : k + size] for k in range(0, cut, size))
            held, held_len = [joined[cut:]], len(joined) - cut
    if held_len:
        yield np.concatenate(held)


def stream_file(url: str, file: str | Path, *, realtime: bool = False, chunk_seconds: float = 0.1,
                sample_rate: int = 16000) -> Iterator[dict[str, Any]]:
    """Send a recording to a speech server as a live source: the server's answers, in order.

    The file is decoded and resampled to `sample_rate` as it goes (tiffin.audio_io.stream_audio),
    sent as 16-bit PCM in messages of `chunk_seconds` (at the pace of real time with `realtime`,
    else each as soon as the previous one is answered), then eof. Each audio message is answered
    with `{"partial": text}` or a result `{"text", "result"}`; the last answer is the result of
    the rest.

    Args:
        url: the server (`ws://host:port`, `http://host:port`, or the endpoint's full URL).
        file: any recording `tiffin predict` reads.
        realtime: send at the pace of the recording, as a microphone would.
        chunk_seconds: audio per message.
        sample_rate: the rate the audio is sent at (the server resamples to its model's).

    Raises:
        MediaError: the file cannot be read.
        StreamError: the server cannot be reached, or closed the stream with an error.
    """
    from tiffin.audio_io import stream_audio

    endpoint = stream_url(url)
    if not chunk_seconds > 0:
        raise TiffinError(f"chunk_seconds={chunk_seconds}: give the seconds of audio per message (> 0)")
    pieces = _chunks(stream_audio(file, sample_rate), max(1, round(chunk_seconds * sample_rate)))
    first = next(pieces, None)  # a file that cannot be read fails here, before the server is bothered
    yield from _exchange(endpoint, first, pieces, sample_rate, realtime)


def _exchange(endpoint: str, first: np.ndarray | None, pieces: Iterator[np.ndarray], sample_rate: int,
              realtime: bool) -> Iterator[dict[str, Any]]:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    try:
        # no compression: PCM hardly compresses, and deflating it costs both sides CPU
        connection = connect(endpoint, compression=None, open_timeout=10, close_timeout=10)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
        raise StreamError(f"{endpoint}: cannot connect ({err or type(err).__name__}); is `tiffin serve` running "
                          "a speech artifact there?") from None
    with connection:
        try:
            connection.send(json.dumps({"config": {"sample_rate": sample_rate}}))
            start, sent = time.monotonic(), 0
            for piece in _with_first(first, pieces):
                if realtime:  # a microphone's pace: this piece is due once the audio before it has been said
                    time.sleep(max(0.0, start + sent / sample_rate - time.monotonic()))
                connection.send(pcm16(piece))
                sent += len(piece)
                yield json.loads(connection.recv())
            connection.send('{"eof" : 1}')  # spelt as Vosk's clients send it
            yield json.loads(connection.recv())
            connection.recv(timeout=10)  # the close that follows the last result
        except ConnectionClosed as closed:
            _check_close(endpoint, closed)
            return
        except TimeoutError:
            raise StreamError(f"{endpoint}: the server did not close the stream after its last result") from None
        raise StreamError(f"{endpoint}: the server sent more than one answer to eof")


def _with_first(first: np.ndarray | None, pieces: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    if first is not None:
        yield first
        yield from pieces


def _check_close(endpoint: str, closed: Exception) -> None:
    """Return on a normal close (1000), else raise StreamError with the server's code and reason."""
    frame = getattr(closed, "rcvd", None)
    code, reason = (frame.code, frame.reason) if frame is not None else (1006, "the connection was lost")
    if code != 1000:
        raise StreamError(f"{endpoint}: the server closed the stream: {code} {reason}".rstrip(), code, reason)


def final_text(answers: Iterable[dict[str, Any]]) -> str:
    """The transcript of a stream: its results' texts joined (partials left out)."""
    return " ".join(a["text"] for a in answers if a.get("text"))
