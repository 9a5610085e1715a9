"""Long recordings through a speech model in overlapping windows, stitched frame-exactly.

Torch-free: windows start a whole number of frames apart (`hop` samples per frame, 320 for
wav2vec2), so window frame k is recording frame start/hop + k; each recording frame is taken
from the window where it sits furthest from an edge (a window gives up the `stride_seconds`
next to a neighbour; the first keeps its start, the last its end). Memory stays bounded by the
window, every kept frame saw context on both sides, and prediction and serving, whatever runs
the windows' logits, stitch them the same way.
"""

from __future__ import annotations

import numpy as np

from tiffin.errors import TiffinError


def window_starts(samples: int, sample_rate: int, hop: int, chunk_seconds: float, stride_seconds: float) -> list[int]:
    """Start samples of the windows a recording of `samples` is run in (one window, [0], when it fits).

    Serving runs all of a recording's windows as one batch; prediction runs them one by one.
    """
    chunk = int(chunk_seconds * sample_rate)
    margin = int(stride_seconds * sample_rate) // hop
    step = (chunk - 2 * margin * hop) // hop * hop
    if step <= 0:
        raise TiffinError(f"chunk of {chunk_seconds}s leaves no room between strides of {stride_seconds}s")
    starts = [0]
    while starts[-1] + chunk < samples:
        starts.append(starts[-1] + step)
    return starts


def stitch(window_logits: list[np.ndarray], starts: list[int], hop: int, stride_samples: float) -> np.ndarray:
    """Join the logits of windows starting at `starts` (window_starts) into the recording's logits."""
    margin = int(stride_samples) // hop  # frames given up next to a neighbour
    kept, filled = [], 0
    for i, (logits, start) in enumerate(zip(window_logits, starts)):
        offset, last = start // hop, i == len(starts) - 1
        end = offset + len(logits) - (0 if last else margin)
        kept.append(logits[filled - offset : end - offset])
        filled = end
    return kept[0] if len(kept) == 1 else np.concatenate(kept)
