"""The parity gate: an artifact must compute what the PyTorch model computes.

Checked on inputs whose batch size (and, for speech, length) differ from the tracing sample:
output count and shapes first, then values within the precision's tolerance, then what users
see (top-1 labels; greedy transcripts). A failure raises a typed error whose message says which
check failed and by how much; the exporter then leaves nothing behind.
"""

from __future__ import annotations

import time
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


class CheckTooSlow(ParityError):
    """The check batches would run past the time budget (bf16 emulated on a CPU without it ran a
    SlowFast-R50 export past 17 minutes): refused after the batch that shows it, not at the end."""


class TopOneAgreement:
    """Classification: the share of inputs whose top-1 label the artifact keeps."""

    key = "top1_agreement"

    def __init__(self, meta: dict | None = None):
        self.agree = self.total = 0

    def add(self, ref: list[np.ndarray] | np.ndarray, got: list[np.ndarray] | np.ndarray) -> None:
        self.agree += int((np.asarray(got).argmax(-1) == np.asarray(ref).argmax(-1)).sum())
        self.total += len(ref)

    def value(self) -> float:
        return self.agree / self.total

    def check(self, value: float, tolerance: dict[str, float]) -> None:
        if value < tolerance["min_top1_agreement"]:
            raise AgreementTooLow(f"top-1 agreement {value:.2%} < {tolerance['min_top1_agreement']:.0%}")


class TranscriptAgreement:
    """Speech: the CER of the artifact's greedy transcripts against PyTorch's."""

    key = "transcript_cer"

    def __init__(self, meta: dict):
        self.vocab = Vocabulary.of_artifact(meta)
        self.errors = self.chars = 0
        self.beam = None  # a tiffin.ctc_beam.BeamDecoder: the artifact's word list / LM, scored alike
        self.beam_errors = self.beam_chars = 0

    def use_beam(self, decoder) -> None:
        self.beam = decoder

    def add(self, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
        for r, g in zip(ref, got):
            a, b = self.vocab.decode_logits(r), self.vocab.decode_logits(g)
            self.errors += edit_distance(a, b)
            self.chars += max(1, len(a))
            if self.beam is not None:
                a, b = self.beam.decode(r), self.beam.decode(g)
                self.beam_errors += edit_distance(a, b)
                self.beam_chars += max(1, len(a))

    def value(self) -> float:
        return self.errors / self.chars

    def extra(self) -> dict[str, float]:
        """The beam transcripts' CER against PyTorch's, when the artifact decodes with a word list."""
        return {"beam_transcript_cer": self.beam_errors / self.beam_chars} if self.beam is not None else {}

    def check(self, value: float, tolerance: dict[str, float]) -> None:
        if value > tolerance["max_cer"]:
            raise AgreementTooLow(f"transcripts differ: CER {value:.3f} > {tolerance['max_cer']}")
        beam = self.extra().get("beam_transcript_cer")
        if beam is not None and beam > tolerance["max_cer"]:
            raise AgreementTooLow(f"beam-search transcripts differ: CER {beam:.3f} > {tolerance['max_cer']}")


def check_parity(
    reference: Callable[..., torch.Tensor],
    artifact: Callable[..., np.ndarray],  # a runtime session: numpy in, numpy out
    samples: list[tuple[torch.Tensor, ...]],
    tolerance: dict[str, float],
    agreement: TopOneAgreement | TranscriptAgreement,
    conv: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    budget_s: float | None = None,
    slow_hint: str = "",
) -> dict:
    """Run both on every sample and compare.

    `budget_s`: after each sample, the pace so far projects the whole check; past the budget it
    stops there (CheckTooSlow, saying how long it would take, and `slow_hint`: what to do).

    Speech compares each utterance's own frames (`conv`: the feature encoder's kernels and
    strides give how many): the frames past them only exist because of a batch's padding, are
    masked out of everything, and nobody reads them. `agreement` (the task row's) scores what
    users see: top-1 labels, greedy transcripts.

    Returns:
        The report stored in tiffin.json: per-sample shapes and differences, and the aggregates.

    Raises:
        ShapeMismatch, ToleranceExceeded, AgreementTooLow, CheckTooSlow.
    """
    rows = []
    started = time.monotonic()
    for done, sample in enumerate(samples):
        elapsed = time.monotonic() - started
        if budget_s is not None and done and elapsed / done * len(samples) > budget_s:
            raise CheckTooSlow(
                f"parity check: {done} of {len(samples)} check batches took {elapsed:.1f} s; all of them would take "
                f"about {elapsed / done * len(samples):.0f} s, past the budget of {budget_s:g} s (--check-budget)"
                f"{'; ' + slow_hint if slow_hint else ''}")
        with torch.inference_mode():
            ref = reference(*sample).float().numpy()
        got = np.asarray(artifact(*(s.numpy() for s in sample)), dtype=np.float32)
        shape = [tuple(s.shape) for s in sample]
        if got.shape != ref.shape:
            raise ShapeMismatch(f"output shape {got.shape} != PyTorch {ref.shape} on inputs {shape}")
        if conv is not None:
            from tiffin.inference import output_frames

            frames = [output_frames(int(n), *conv) for n in sample[1]]
            ref = [ref[i, :n] for i, n in enumerate(frames)]
            got = [got[i, :n] for i, n in enumerate(frames)]
            diff = np.concatenate([np.abs(g - r).ravel() for g, r in zip(got, ref)])
            scale = np.concatenate([np.abs(r).ravel() for r in ref])
        else:
            diff, scale = np.abs(got - ref), np.abs(ref)
        excess = diff - (tolerance["atol"] + tolerance["rtol"] * scale)
        rows.append({"inputs": shape, "max_abs_diff": float(diff.max()),
                     "max_rel_diff": float((diff / (scale + 1e-6)).max()), "within_tolerance": bool((excess <= 0).all())})
        agreement.add(ref, got)
    report = {"tolerance": tolerance, "samples": rows, "max_abs_diff": max(r["max_abs_diff"] for r in rows),
              agreement.key: agreement.value(), **(agreement.extra() if hasattr(agreement, "extra") else {})}
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    if not all(r["within_tolerance"] for r in rows):
        raise ToleranceExceeded(
            f"max |difference| {worst['max_abs_diff']:.3g} on inputs {worst['inputs']} exceeds atol {tolerance['atol']:g} "
            f"+ rtol {tolerance['rtol']:g} x |value|")
    agreement.check(report[agreement.key], tolerance)
    return report


def conv_of(loaded) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A loaded speech network's conv kernels and strides (how many frames each utterance owns:
    `check_parity`'s `conv`); None for a video network."""
    return (loaded.net.kernels, loaded.net.strides) if getattr(loaded.net, "kernels", None) else None


def slow_hint(precision: str, exporting: bool = True) -> str:
    """What to do about a check past its budget (`check_parity`'s `slow_hint`): the precision's
    own reason first, where there is one."""
    from tiffin.cpu import precision_warning

    wrote = "; nothing was written" if exporting else ""
    reason = precision_warning(precision)
    if reason:
        return f"{reason}{wrote}. Export fp32, or give --check-budget more seconds"
    return f"give --check-budget more seconds (or fewer --check-data files){wrote}"
