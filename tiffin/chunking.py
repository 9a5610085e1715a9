"""Long recordings through a speech model in overlapping windows, stitched frame-exactly.

Torch-free: `run` is any function from a mono waveform to its logits [frames, vocab] (a
PyTorch module, an ONNX Runtime session), so prediction and serving stitch the same way.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tiffin.errors import TiffinError


def chunked_logits(run: Callable[[np.ndarray], np.ndarray], wave: np.ndarray, sample_rate: int, hop: int,
                   chunk_seconds: float, stride_seconds: float) -> np.ndarray:
    """Logits [frames, vocab] of a whole recording, in windows when it is longer than one.

    Windows of `chunk_seconds` start a whole number of frames apart (`hop` samples per frame,
    320 for wav2vec2), so window frame k is recording frame start/hop + k. Each recording frame
    is taken from the window where it sits furthest from an edge: a window gives up the
    `stride_seconds` next to a neighbour (the first keeps its start, the last its end). Memory
    stays bounded by the window, and every kept frame saw context on both sides.

    Raises:
        TiffinError: a chunk too short for its strides.
    """
    chunk = int(chunk_seconds * sample_rate)
    margin = int(stride_seconds * sample_rate) // hop  # frames given up next to a neighbour
    step = (chunk - 2 * margin * hop) // hop * hop
    if step <= 0:
        raise TiffinError(f"chunk of {chunk_seconds}s leaves no room between strides of {stride_seconds}s")
    if len(wave) <= chunk:
        return run(wave)
    kept, filled, start = [], 0, 0
    while True:
        logits = run(wave[start : start + chunk])
        offset, last = start // hop, start + chunk >= len(wave)
        end = offset + len(logits) - (0 if last else margin)
        kept.append(logits[filled - offset : end - offset])
        filled = end
        if last:
            return np.concatenate(kept)
        start += step
