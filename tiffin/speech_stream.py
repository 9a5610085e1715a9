"""A recording of any length through a speech model as a stream, in constant memory.

Samples come in blocks (from a file as it decodes, or from a live client); windows of the
model's chunk are cut as soon as they are whole, run `windows_per_call` at a time, stitched
frame-exactly (tiffin.chunking's rule: window k+1 starts a whole number of frames after window
k, each side gives up `stride_seconds` next to a neighbour), and the kept frames go straight to
a CTC decoder that emits each word once it is complete. Nothing holds the whole recording's
samples or logits: memory is one window per model call plus the decoder's current word (beam
search: its pruned look-back), whatever the length. The words are the same as decoding the
whole recording's stitched logits at once (greedy: by construction; beam: flashlight's
incremental decoding, pruned a few seconds behind the last frame).

Silence is cheap: a window whose every 20 ms frame is quieter than `silence_dbfs` is not sent to
the model; its frames are blank (what a CTC model gives silence), so timestamps stay in the
recording's time. The recording's first and last windows always run (a model may read letters
into the silence at a recording's edge). TIFFIN_SILENCE_DBFS sets the threshold (default -60 dBFS), `off` sends every
window to the model.

Torch-free: `tiffin predict`, the services and the live WebSocket endpoint all run it.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from tiffin.errors import TiffinError

SILENCE_ENV = "TIFFIN_SILENCE_DBFS"
SILENCE_DEFAULT = "-60"
_SILENCE_FRAME_SECONDS = 0.02


def silence_threshold(env: dict[str, str] | None = None) -> float | None:
    """The dBFS below which a window is skipped as silent ($TIFFIN_SILENCE_DBFS; None: `off`).

    Raises:
        TiffinError: neither a number <= 0 nor `off`.
    """
    raw = (os.environ if env is None else env).get(SILENCE_ENV, SILENCE_DEFAULT).strip().lower()
    if raw in ("off", "none", "no", "false"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 1.0
    if not value <= 0:
        raise TiffinError(f"{SILENCE_ENV}={raw!r}: give a level in dBFS (a number <= 0, e.g. -60) or 'off'")
    return value


def is_silent(window: np.ndarray, sample_rate: int, dbfs: float) -> bool:
    """True when no 20 ms frame of `window` is louder (RMS) than `dbfs`."""
    size = max(1, int(sample_rate * _SILENCE_FRAME_SECONDS))
    n = len(window) // size * size
    limit = 10.0 ** (dbfs / 20.0)
    if n:
        frames = window[:n].reshape(-1, size).astype(np.float64)
        if np.sqrt((frames * frames).mean(axis=1)).max() > limit:
            return False
    rest = window[n:].astype(np.float64)
    return not (len(rest) and np.sqrt((rest * rest).mean()) > limit)


@dataclass
class Window:
    start: int  # first sample, in the recording
    samples: np.ndarray
    last: bool


class WindowCutter:
    """Samples in, the windows tiffin.chunking.window_starts would cut out: window k starts at
    k * step and is emitted once the recording is known to go on past it (or ends)."""

    def __init__(self, sample_rate: int, hop: int, chunk_seconds: float, stride_seconds: float):
        self.chunk = int(chunk_seconds * sample_rate)
        margin = int(stride_seconds * sample_rate) // hop
        self.step = (self.chunk - 2 * margin * hop) // hop * hop
        if self.step <= 0:
            raise TiffinError(f"chunk of {chunk_seconds}s leaves no room between strides of {stride_seconds}s")
        self.next_start = 0  # start of the next window to emit
        self.held_from = 0  # recording sample of held[0]
        self.held: list[np.ndarray] = []
        self.held_len = 0

    @property
    def total(self) -> int:
        """Samples seen so far."""
        return self.held_from + self.held_len

    def push(self, block: np.ndarray) -> list[Window]:
        if len(block):
            self.held.append(np.asarray(block, dtype=np.float32))
            self.held_len += len(block)
        out = []
        while self.total > self.next_start + self.chunk:  # a sample past this window: it is not the last
            out.append(Window(self.next_start, self._take(self.next_start, self.chunk), False))
            self.next_start += self.step
            self._drop_before(self.next_start)
        return out

    def samples_from(self, start: int) -> np.ndarray:
        """The samples held from recording sample `start` (at or after the window being filled) on."""
        start = max(start, self.held_from)
        return self._take(start, self.total - start)

    def finish(self) -> list[Window]:
        if self.total <= self.next_start and self.next_start:
            return []
        return [Window(self.next_start, self._take(self.next_start, self.total - self.next_start), True)]

    def _take(self, start: int, length: int) -> np.ndarray:
        if len(self.held) > 1:
            self.held = [np.concatenate(self.held)]
        joined = self.held[0] if self.held else np.zeros(0, np.float32)
        return joined[start - self.held_from : start - self.held_from + length]

    def _drop_before(self, start: int) -> None:
        if len(self.held) > 1:
            self.held = [np.concatenate(self.held)]
        if self.held:
            cut = max(0, min(start - self.held_from, self.held_len))
            self.held = [self.held[0][cut:].copy()]
            self.held_from += cut
            self.held_len -= cut


class Stitcher:
    """Window logits in, the recording's frames out (tiffin.chunking.stitch, one window at a time):
    each window gives the frames from where the previous one stopped to `margin` frames before its
    end (the last window: to its end)."""

    def __init__(self, hop: int, stride_samples: float):
        self.hop, self.margin = hop, int(stride_samples) // hop
        self.filled = 0  # recording frames given so far

    def push(self, logits: np.ndarray, start: int, last: bool) -> tuple[int, np.ndarray]:
        """(first recording frame, kept logits) of a window starting at sample `start`."""
        offset = start // self.hop
        end = offset + len(logits) - (0 if last else self.margin)
        first = self.filled
        kept = logits[first - offset : end - offset]
        self.filled = max(first, end)
        return first, kept


def _max_probs(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=-1)


class GreedyWords:
    """Greedy CTC over frames given in order: collapse repeats, drop blanks and specials, split words
    where the vocabulary marks them; each word is given once complete, with its start, end and
    `conf` (the mean probability of its frames' tokens). Words joined by spaces equal
    Vocabulary.decode of all the frames' argmax."""

    def __init__(self, vocab, seconds_per_frame: float):
        from tiffin.ctc import DELIMITER

        self.vocab, self.spf = vocab, seconds_per_frame
        self.marker = vocab.word_start or DELIMITER
        self.previous = -1  # the last frame's token (repeats collapse across pushes too)
        self.chars: list[str] = []  # the current word
        self.first = self.last = -1  # its first and last frames
        self.probs: list[float] = []

    def push(self, logits: np.ndarray, first_frame: int) -> list[dict[str, Any]]:
        logits = np.asarray(logits)
        if not len(logits):
            return []
        if logits.shape[-1] > len(self.vocab.tokens):
            raise TiffinError(f"the model has {logits.shape[-1]} outputs but its vocabulary {len(self.vocab.tokens)} "
                              "tokens; give the vocabulary it was trained with (export it again)")
        ids = logits.argmax(-1)
        probs = _max_probs(logits)
        silent, tokens, out = self.vocab.silent, self.vocab.tokens, []
        for k, token in enumerate(ids.tolist()):
            frame = first_frame + k
            if token in silent:
                self.previous = token
                continue
            if token == self.previous:  # the same token held: the word goes on to this frame
                if self.chars:
                    self.last = frame
                    self.probs.append(float(probs[k]))
                continue
            self.previous = token
            for ch in tokens[token].replace(self.marker, " "):
                if ch.isspace():
                    out += self._close()
                else:
                    if not self.chars:
                        self.first = frame
                    self.chars.append(ch)
            if self.chars:
                self.last = frame
                self.probs.append(float(probs[k]))
        return out

    def finish(self) -> list[dict[str, Any]]:
        return self._close()

    def fork(self) -> "GreedyWords":
        """A copy to read ahead with (a partial result), sharing the vocabulary."""
        twin = copy.copy(self)
        twin.chars, twin.probs = list(self.chars), list(self.probs)
        return twin

    @property
    def pending(self) -> str:
        """The word being spelt."""
        return "".join(self.chars)

    def _close(self) -> list[dict[str, Any]]:
        if not self.chars:
            return []
        word = {"word": "".join(self.chars), "start": round(self.first * self.spf, 3),
                "end": round((self.last + 1) * self.spf, 3),
                "conf": round(float(np.mean(self.probs)), 4)}
        self.chars, self.probs = [], []
        return [word]


@dataclass
class Segment:
    """Words committed by one stitched window (a final result of the live protocol)."""

    words: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w["word"] for w in self.words)


class Transcription:
    """One recording's stream: `push` sample blocks (at the model's rate), get the segments each
    completed window commits; `finish` at the end for the rest. `partial()` is the text a live
    client sees for what is not committed yet.

    `logits` maps a list of windows to their logits (a predictor's session or model service);
    `decoder` makes the word decoder (GreedyWords, or tiffin.ctc_beam.BeamDecoder.stream).
    """

    def __init__(self, logits: Callable[[list[np.ndarray]], list[np.ndarray]], vocab, sample_rate: int,
                 kernels: tuple[int, ...], strides: tuple[int, ...], chunk_seconds: float, stride_seconds: float,
                 decoder=None, windows_per_call: int | None = 8, silence_dbfs: float | None = None):
        self.logits, self.vocab, self.rate = logits, vocab, sample_rate
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.hop = int(np.prod(self.strides))
        self.spf = self.hop / sample_rate
        self.cutter = WindowCutter(sample_rate, self.hop, chunk_seconds, stride_seconds)
        self.stitcher = Stitcher(self.hop, stride_seconds * sample_rate)
        self.words = decoder.stream(self.spf) if decoder is not None else GreedyWords(vocab, self.spf)
        self.greedy = None if decoder is None else GreedyWords(vocab, self.spf)  # partial results' words
        self.since_final: list[str] = []  # greedy words committed since the last segment (beam: partials)
        self.per_call = max(1, windows_per_call or 1)
        self.silence_dbfs = silence_dbfs
        self.queue: list[Window] = []
        self.windows = self.skipped = 0
        self.finished = False
        self.stride_seconds = stride_seconds
        self.ahead = None  # partial(): (frame read to, greedy state there, words read) past the committed frames

    @property
    def samples(self) -> int:
        return self.cutter.total

    def push(self, block: np.ndarray) -> list[Segment]:
        self.queue += self.cutter.push(block)
        if len(self.queue) < self.per_call:
            return []
        return self._run()

    def finish(self) -> list[Segment]:
        """The segments of the rest (the last one holds the last word)."""
        if self.finished:
            return []
        self.finished = True
        if self.cutter.total == 0:
            return []
        self.queue += self.cutter.finish()
        segments = self._run()
        words = self.words.finish()
        if self.greedy is not None:
            self.greedy.finish()
        self.since_final = []
        return segments + ([Segment(words)] if words else [])

    def _run(self) -> list[Segment]:
        from tiffin.inference import pad_to_one_frame  # (tiffin.inference imports PyAV: not at import)

        queue, self.queue = self.queue, []
        for w in queue:
            if w.last and w.start == 0:  # the whole recording in one window: a blip gets one frame at least
                w.samples = pad_to_one_frame(w.samples, self.kernels, self.strides)
        loud = [w for w in queue if not self._silent(w)]
        got = iter(self._call([w.samples for w in loud])) if loud else iter(())
        out = []
        for w in queue:
            logits = next(got) if any(w is x for x in loud) else self._blank(len(w.samples))
            first, kept = self.stitcher.push(np.asarray(logits), w.start, w.last)
            words = self.words.push(kept, first)
            if self.greedy is not None:
                self.since_final += [x["word"] for x in self.greedy.push(kept, first)]
            if words:
                self.since_final = []
                out.append(Segment(words))
        return out

    def _call(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        got = []
        for k in range(0, len(waves), self.per_call):
            got += list(self.logits(waves[k : k + self.per_call]))
        return got

    def _silent(self, window: Window) -> bool:
        self.windows += 1
        # the recording's first and last windows always run: there the model sees the recording's
        # edge and keeps the frames next to it, and a model may read letters into silence at an
        # edge (the embedded English one does, at the end) that a silent middle never gives
        edge = window.start == 0 or window.last
        silent = not edge and self.silence_dbfs is not None and is_silent(window.samples, self.rate, self.silence_dbfs)
        self.skipped += silent
        return silent

    def _blank(self, samples: int) -> np.ndarray:
        from tiffin.inference import output_frames

        frames = output_frames(samples, self.kernels, self.strides)
        out = np.full((frames, len(self.vocab.tokens)), -1e4, np.float32)
        out[:, self.vocab.blank_id] = 0.0
        return out

    def partial(self) -> str:
        """What is said but not yet committed: the committed-but-unfinished words, then a greedy
        reading of the audio since the last committed frame. Read ahead in steps: frames that had
        `stride_seconds` of audio after them when read are kept with the greedy state at their end,
        so the next partial runs the model on that much context and the audio since, not on all the
        window being filled (up to its 30 s), and a partial's cost stays about two strides of audio."""
        from tiffin.inference import pad_to_one_frame

        base = self.greedy if self.greedy is not None else self.words
        said = list(self.since_final) if self.greedy is not None else []
        if self.ahead is None or self.ahead[0] < self.stitcher.filled:  # a window committed: read from there
            self.ahead = (self.stitcher.filled, base.fork(), [])
        frame, state, read = self.ahead
        context = int(self.stride_seconds * self.rate) // self.hop * self.hop
        first = max(self.cutter.next_start, frame * self.hop - context)
        samples = self.cutter.samples_from(first)
        if len(samples) and not (self.silence_dbfs is not None and is_silent(samples, self.rate, self.silence_dbfs)):
            logits = np.asarray(self._call([pad_to_one_frame(samples, self.kernels, self.strides)])[0])
            logits = logits[max(0, frame - first // self.hop):]
            settled = max(0, len(logits) - self.stitcher.margin)  # frames with a stride of audio after them
            state = state.fork()
            read = read + [w["word"] for w in state.push(logits[:settled], frame)]
            self.ahead = (frame + settled, state, read)
            tentative = state.fork()
            said += read + [w["word"] for w in tentative.push(logits[settled:], frame + settled)]
        else:
            tentative = state.fork()
            said += read
        said += [w["word"] for w in tentative.finish()]
        return " ".join(said)


def transcribe_blocks(blocks: Iterable[np.ndarray], transcription: Transcription) -> Iterator[Segment]:
    """Every segment of a recording given as sample blocks."""
    for block in blocks:
        yield from transcription.push(block)
    yield from transcription.finish()


def frames_per_second(sample_rate: int, strides: tuple[int, ...]) -> float:
    return sample_rate / math.prod(strides)
