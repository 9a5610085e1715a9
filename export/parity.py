"""The parity gate: an artifact must compute what the PyTorch model computes.

Checked on inputs whose batch size (and, for speech, length) differ from the tracing sample:
output count and shapes first, then values within the precision's tolerance, then what users
see (top-1 labels; greedy transcripts). A failure raises a typed error whose message says which
check failed and by how much; the exporter then leaves nothing behind.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from tiffin.ctc import Vocabulary, edit_distance
from tiffin.errors import TiffinError


class ParityError(TiffinError):
    """The artifact does not compute what the PyTorch model computes."""


class ShapeMismatch(ParityError):
    pass


class ToleranceExceeded(ParityError):
    pass


class AgreementTooLow(ParityError):
    pass


def check_parity(
    reference: Callable[..., torch.Tensor],
    artifact: Callable[..., np.ndarray],  # a runtime session: numpy in, numpy out
    samples: list[tuple[torch.Tensor, ...]],
    tolerance: dict[str, float],
    task: str,
    vocab: Vocabulary | None = None,
    conv: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> dict:
    """Run both on every sample and compare.

    Speech compares each utterance's own frames (`conv`: the feature encoder's kernels and
    strides give how many): the frames past them only exist because of a batch's padding, are
    masked out of everything, and nobody reads them.

    Returns:
        The report stored in tiffin.json: per-sample shapes and differences, and the aggregates.

    Raises:
        ShapeMismatch, ToleranceExceeded, AgreementTooLow.
    """
    rows, agree, total, char_errors, chars = [], 0, 0, 0, 0
    for sample in samples:
        with torch.inference_mode():
            ref = reference(*sample).float().numpy()
        got = np.asarray(artifact(*(s.numpy() for s in sample)), dtype=np.float32)
        shape = [tuple(s.shape) for s in sample]
        if got.shape != ref.shape:
            raise ShapeMismatch(f"output shape {got.shape} != PyTorch {ref.shape} on inputs {shape}")
        if task == "speech-recognition" and conv is not None:
            from tiffin.inference import output_frames

            frames = [output_frames(int(n), *conv) for n in sample[1]]
            ref = [ref[i, :n] for i, n in enumerate(frames)]
            got = [got[i, :n] for i, n in enumerate(frames)]
            diff = np.concatenate([np.abs(g - r).ravel() for g, r in zip(got, ref)])
            scale = np.concatenate([np.abs(r).ravel() for r in ref])
        else:
            diff, scale = np.abs(got - ref), np.abs(ref)
        excess = diff - (tolerance["atol"] + tolerance["rtol"] * scale)
        row = {"inputs": shape, "max_abs_diff": float(diff.max()),
               "max_rel_diff": float((diff / (scale + 1e-6)).max()), "within_tolerance": bool((excess <= 0).all())}
        if task == "video-classification":
            agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
            total += len(ref)
        else:
            for i in range(len(ref)):
                a, b = vocab.decode_logits(ref[i]), vocab.decode_logits(got[i])
                char_errors += edit_distance(a, b)
                chars += max(1, len(a))
        rows.append(row)
    report = {"tolerance": tolerance, "samples": rows, "max_abs_diff": max(r["max_abs_diff"] for r in rows)}
    if task == "video-classification":
        report["top1_agreement"] = agree / total
    else:
        report["transcript_cer"] = char_errors / chars
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    if not all(r["within_tolerance"] for r in rows):
        raise ToleranceExceeded(
            f"max |difference| {worst['max_abs_diff']:.3g} on inputs {worst['inputs']} exceeds atol {tolerance['atol']:g} "
            f"+ rtol {tolerance['rtol']:g} x |value|")
    if task == "video-classification" and report["top1_agreement"] < tolerance["min_top1_agreement"]:
        raise AgreementTooLow(f"top-1 agreement {report['top1_agreement']:.2%} < {tolerance['min_top1_agreement']:.0%}")
    if task == "speech-recognition" and report["transcript_cer"] > tolerance["max_cer"]:
        raise AgreementTooLow(f"transcripts differ: CER {report['transcript_cer']:.3f} > {tolerance['max_cer']}")
    return report

