"""Video decoding for every stage: a file in, uint8 RGB frames [T, H, W, 3] out.

Training, evaluation, prediction and (later) serving all call `decode_clip`, so a clip
is sampled and resized the same way everywhere. PyAV only, no torch: serve/ imports this.
Exercised by `tiffin train video` and `tiffin predict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tiffin.errors import MediaError, truncation_note
from tiffin.limits import DecodeBudget
from tiffin.media_open import open_container

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts", ".flv", ".3gp", ".wmv", ".ogv")

# Errors PyAV raises on unreadable, truncated or non-media files. OSError covers missing files;
# ValueError and IndexError come out of a few demuxers on garbage input.
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, UnicodeDecodeError)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns from a file's headers and its first frame."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    declared: float | None = None  # what the headers announce, when the packets stop well short of it

    @property
    def truncation(self) -> str | None:
        """A line saying the file is cut short, when it is (Kinetics-style scraped downloads often are)."""
        return None if self.declared is None else truncation_note(self.duration, self.declared)


def is_video_file(path: Path) -> bool:
    """True for a visible file whose suffix is a container tiffin reads."""
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError(path, "has no video stream; give a video file")
    return container.streams.video[0]


def _declared_size(stream: av.video.stream.VideoStream) -> tuple[int, int]:
    """(width, height) the headers declare; (0, 0) where no decoder knows the codec (it fails next)."""
    context = stream.codec_context
    return (context.width or 0, context.height or 0) if context is not None else (0, 0)


def _stream_start(stream: av.video.stream.VideoStream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


# Containers whose header duration FFmpeg estimates from the bit rate (often wrong) or lacks.
_ESTIMATED_DURATION = {"mpeg", "mpegvideo", "h264", "hevc", "m4v", "mjpeg", "rawvideo"}


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if container.format.name in _ESTIMATED_DURATION:
        return None
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _demuxed_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                      budget: DecodeBudget) -> float | None:
    """Duration from the packets' timestamps: reads the file, decodes nothing (within the budget's time)."""
    end, packets = None, 0
    for packet in container.demux(stream):
        budget.tick()
        if not packet.size:
            continue
        packets += 1
        if packet.pts is not None and packet.time_base:
            stamp = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = stamp if end is None else max(end, stamp)
    if end is not None:
        return end - _stream_start(stream)
    fps = _frame_rate(stream)
    return packets / fps if fps and packets else None


def probe(path: str | Path, budget: DecodeBudget | None = None) -> VideoInfo:
    """Read a video's duration, rate and size, and prove its first frame decodes: the frame size
    the headers declare is checked against the limits before anything is decoded, the duration
    after the packets were measured (tiffin.limits; `budget` is the file's, spent by its clips too).

    Raises:
        MediaError: the file is missing, not a video, empty, undecodable or over a limit.
    """
    path = str(path)
    budget = budget or DecodeBudget(path)
    try:
        with open_container(path) as container:
            stream = _video_stream(container, path)
            budget.frame_size(*_declared_size(stream))
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaError(path, "has no decodable video frames")
            budget.frame(first.width, first.height)
            header = _header_duration(container, stream)
            fps = _frame_rate(stream)
            container.seek(0)  # measure the span the packets cover, from the top
            readable = _demuxed_duration(container, stream, budget)
            duration, declared = header if header is not None else readable, None
            if header is not None and readable is not None and header - readable > max(3 / (fps or 30.0), 0.25):
                duration, declared = readable, header  # cut short: the readable part is what there is
            info = VideoInfo(path, float(duration or 0.0), fps, first.width, first.height, stream.codec_context.name,
                             declared)
    except MediaError:
        raise
    except _DECODE_ERRORS as exc:
        raise MediaError(path, f"cannot be read as video ({_reason(exc)})") from None
    if not info.duration > 0:
        raise MediaError(path, "has zero duration")
    budget.video_seconds(info.duration)
    return info


def _reason(exc: BaseException) -> str:
    # FFmpeg's own wording without the file name (the MediaError already names the file).
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


def sample_times(start: float, clip_duration: float, num_frames: int) -> list[float]:
    """Timestamps of the frames of a clip: midpoints of `num_frames` equal slices."""
    step = clip_duration / num_frames
    return [start + (i + 0.5) * step for i in range(num_frames)]


def resized_size(width: int, height: int, side_size: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to `side_size`, rounded to integers."""
    if not side_size:
        return width, height
    scale = side_size / min(width, height)
    return max(side_size, round(width * scale)), max(side_size, round(height * scale))


def decode_clip(
    path: str | Path,
    start: float,
    clip_duration: float,
    num_frames: int,
    side_size: int | None = None,
    budget: DecodeBudget | None = None,
) -> np.ndarray:
    """Decode the frames of one clip, resized so the short side is `side_size`.

    Seeks to the key frame before `start` and decodes only up to the clip's end. A frame
    is the one on screen at its sample time (the last frame shown at or before it), which
    is right for variable frame rates too; past the end of the video the last frame repeats.
    Only the chosen frames are converted to RGB, and they are resized in that conversion.

    Args:
        path: video file.
        start: clip start in seconds from the first frame.
        clip_duration: clip length in seconds.
        num_frames: frames to return.
        side_size: short side after resizing; None keeps the decoded size.
        budget: what the file may still cost to decode (tiffin.limits); None: a fresh one.

    Returns:
        uint8 array [num_frames, H, W, 3], upright (display rotation applied).

    Raises:
        MediaError: the file cannot be opened or decoded, or decoding it passes a limit.
    """
    path = str(path)
    budget = budget or DecodeBudget(path)
    times = sample_times(start, clip_duration, num_frames)
    try:
        with open_container(path) as container:
            clip = _sample(container, path, times, side_size, budget, seek=start > 0)
        if clip is None and start > 0:
            # The seek overshot the clip (MPEG-TS and some AVI indexes seek by bytes): decode from the top.
            with open_container(path) as container:
                clip = _sample(container, path, times, side_size, budget, seek=False)
    except MediaError:
        raise
    except _DECODE_ERRORS as exc:
        raise MediaError(path, f"cannot be decoded ({_reason(exc)})") from None
    if clip is None:
        raise MediaError(path, "has no decodable video frames")
    return np.stack(clip)


def _sample(container: av.container.InputContainer, path: str, times: list[float], side_size: int | None,
            budget: DecodeBudget, seek: bool) -> list[np.ndarray] | None:
    """The frames on screen at `times`; None when nothing decodes or a seek landed past times[0].
    Every decoded frame is charged to `budget` before it is converted."""
    stream = _video_stream(container, path)
    budget.frame_size(*_declared_size(stream))
    stream.thread_type = "AUTO"
    origin = _stream_start(stream)
    fps = _frame_rate(stream) or 30.0
    if seek and stream.time_base:
        container.seek(int((origin + times[0]) / stream.time_base), stream=stream, backward=True)
    clip: list[np.ndarray] = []
    prev, prev_rgb, count = None, None, 0
    # one reformatter for the clip: it keeps its swscale context between frames, where
    # frame.reformat builds one per frame (half the time of a 32-frame clip at 256 px)
    to_rgb = _RgbConverter(side_size)
    for frame in container.decode(stream):
        budget.frame(frame.width, frame.height)
        t = frame.time - origin if frame.time is not None else count / fps
        count += 1
        if seek and prev is None and t > times[0] + 0.5 / fps:
            return None
        # A frame stamped at a sample time (to float rounding) is the one on screen then.
        while len(clip) < len(times) and times[len(clip)] < t - 1e-6:
            shown = prev if prev is not None else frame
            if prev_rgb is None or shown is not prev:
                prev_rgb = to_rgb(shown)
            clip.append(prev_rgb)
        if len(clip) == len(times):
            return clip
        prev, prev_rgb = frame, None
    if prev is None:
        return None
    # Past the end of the video the last frame stays on screen.
    last = to_rgb(prev)
    return clip + [last] * (len(times) - len(clip))


class _RgbConverter:
    """Decoded frames -> upright uint8 RGB arrays with the short side `side_size` (bilinear)."""

    def __init__(self, side_size: int | None):
        self.side_size, self.reformatter = side_size, VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = resized_size(frame.width, frame.height, self.side_size)
        rgb = self.reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                        interpolation="BILINEAR").to_ndarray()
        # Phone videos carry a display rotation; ffmpeg's players apply it, so do we.
        quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
        return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Crop [T, H, W, C] frames to the central `size` x `size` square."""
    _, h, w, _ = frames.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[:, top : top + size, left : left + size]


def evenly_spaced_starts(duration: float, clip_duration: float, num_clips: int) -> list[float]:
    """Starts of `num_clips` clips spread over a video: centres of equal slices of the range."""
    free = max(0.0, duration - clip_duration)
    if free == 0.0:
        return [0.0]
    return [free * (k + 0.5) / num_clips for k in range(num_clips)]


def consecutive_starts(duration: float, clip_duration: float) -> list[float]:
    """Starts of the back-to-back clips that fit in a video (at least one)."""
    return [k * clip_duration for k in range(max(1, math.floor(duration / clip_duration)))]
