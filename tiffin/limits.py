"""What one media file may cost to decode, for every stage: serving, `tiffin predict`, training.

One table of limits, each read from its `TIFFIN_MAX_*` environment variable (the same names the
services document), so a deployer reasons about one set of numbers wherever a file is decoded.
The CLI's `--limit NAME=VALUE` raises one for a command by setting its variable (loader workers
inherit it). A `DecodeBudget` is spent by one file's decoding: frames are charged before they are
converted, so a file is refused at the limit, not after it was decoded in full.
Torch-free: serving imports it. Exercised by `tiffin predict --limit video-seconds=1200`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields

from tiffin.errors import MediaError, TiffinError


@dataclass(frozen=True)
class Limit:
    env: str  # the environment variable that sets it
    kind: type  # int or float
    default: str
    minimum: float
    meaning: str


# name (as `--limit NAME=VALUE` spells it) -> the limit; README's limits table is this table
LIMITS: dict[str, Limit] = {
    "video-seconds": Limit("TIFFIN_MAX_VIDEO_SECONDS", float, "600", 0.01, "longest video accepted"),
    "video-pixels": Limit("TIFFIN_MAX_VIDEO_PIXELS", int, "33177600", 1,
                          "largest frame, width x height (8K = 7680x4320), checked from the headers before decoding"),
    # 1e10: 300 frames of 8K, 4,800 of 1080p (160 s of 1080p30 from a key frame)
    "decode-pixels": Limit("TIFFIN_MAX_DECODE_PIXELS", int, "10000000000", 1,
                           "pixels x frames one video may decode (probe and every clip together)"),
    # speech streams in constant memory (tiffin.speech_stream): the length bounds time, not memory
    "audio-seconds": Limit("TIFFIN_MAX_AUDIO_SECONDS", float, "14400", 0.01,
                           "longest recording accepted (4 h), counted in samples at the model's rate after downmix "
                           "(decoding stops there; memory does not grow with it)"),
    "decode-seconds": Limit("TIFFIN_MAX_DECODE_SECONDS", float, "180", 0.001,
                            "time one file may spend decoding, model time not counted (a backstop behind the "
                            "limits above; 4 h of 48 kHz Opus decodes in about 50 s on one core)"),
}


@dataclass(frozen=True)
class Limits:
    video_seconds: float
    video_pixels: int
    decode_pixels: int
    audio_seconds: float
    decode_seconds: float


def env_number(name: str, kind: type, minimum: float, default: str, env: dict[str, str]) -> int | float:
    """The number the variable `name` sets in `env` (else `default`): the one parser of tiffin's
    numeric settings, the serving ones (tiffin.serve.settings) included.

    Raises:
        TiffinError: not a number of `kind`, or below `minimum`, naming the variable.
    """
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise TiffinError(f"{name}={raw!r}: give a {'whole ' if kind is int else ''}number >= {minimum:g}")
    return value


def _value(name: str, env: dict[str, str]) -> int | float:
    limit = LIMITS[name]
    return env_number(limit.env, limit.kind, limit.minimum, limit.default, env)


def read_limits(env: dict[str, str] | None = None) -> Limits:
    """The limits in force: `env` (default os.environ), else the defaults.

    Raises:
        TiffinError: a variable that is not a number, or below its minimum.
    """
    env = dict(os.environ if env is None else env)
    return Limits(*(_value(f.name.replace("_", "-"), env) for f in fields(Limits)))


def raise_limits(values: list[str]) -> None:
    """Apply `--limit NAME=VALUE` options: each sets its TIFFIN_MAX_* variable for this process and
    the processes it starts (data loader workers).

    Raises:
        TiffinError: an unknown name or a bad value.
    """
    for item in values:
        name, _, value = item.partition("=")
        name = name.strip().lower().replace("_", "-")
        if name not in LIMITS or not value:
            raise TiffinError(f"--limit {item}: give NAME=VALUE with NAME one of {', '.join(LIMITS)}")
        _value(name, {LIMITS[name].env: value.strip()})
        os.environ[LIMITS[name].env] = value.strip()


def _hint(name: str) -> str:
    # the variable, which serving and the CLI share (the CLI's --limit NAME=VALUE sets it)
    return f"({LIMITS[name].env})"


class DecodeBudget:
    """What one file may still cost: frames are charged before they are converted, samples as
    they are kept; the first charge past a limit raises MediaError naming the limit."""

    def __init__(self, path: str, limits: Limits | None = None):
        self.path, self.limits = str(path), limits or read_limits()
        self.pixels = 0
        # decoding time: what was spent before the last pause, plus the running stretch (None: paused).
        # A stream pauses it while its consumer holds a block, so running the model on an hour of
        # audio between blocks is not counted as decoding
        self.spent, self.since = 0.0, time.monotonic()

    def pause(self) -> None:
        if self.since is not None:
            self.spent += time.monotonic() - self.since
            self.since = None

    def resume(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def seconds(self) -> float:
        """Time spent decoding so far."""
        return self.spent + (time.monotonic() - self.since if self.since is not None else 0.0)

    def frame_size(self, width: int, height: int) -> None:
        """Refuse a frame size over the limit (called with what headers declare, before decoding)."""
        if width * height > self.limits.video_pixels:
            raise MediaError(self.path, f"{width}x{height} frames are larger than the limit of "
                                        f"{self.limits.video_pixels} pixels {_hint('video-pixels')}")

    def frame(self, width: int, height: int) -> None:
        """Charge one decoded frame."""
        self.frame_size(width, height)
        self.pixels += width * height
        if self.pixels > self.limits.decode_pixels:
            raise MediaError(self.path, f"decoding it takes more than the limit of {self.limits.decode_pixels:.3g} "
                                        f"pixels x frames {_hint('decode-pixels')}")
        self.tick()

    def tick(self) -> None:
        """Refuse a file that has spent its decoding time."""
        if self.seconds() > self.limits.decode_seconds:
            raise MediaError(self.path, f"decoding it took longer than the limit of {self.limits.decode_seconds:g} s "
                                        f"{_hint('decode-seconds')}")

    def video_seconds(self, seconds: float) -> None:
        if seconds > self.limits.video_seconds:
            raise MediaError(self.path, f"{seconds:.1f} s is longer than the limit of {self.limits.video_seconds:g} s "
                                        f"{_hint('video-seconds')}")

    def audio_seconds(self, seconds: float) -> None:
        if seconds > self.limits.audio_seconds:
            raise MediaError(self.path, f"{seconds:.1f} s is longer than the limit of {self.limits.audio_seconds:g} s "
                                        f"{_hint('audio-seconds')}")
