"""`tiffin evaluate MODEL DATA`: how well a model does on labelled data, before or after fine-tuning.

Speech: CER and WER of greedy transcripts against a CSV/TSV of `speech_files,targets` (the
training CSV format); video: top-1 accuracy on a class folder DATA/<label>/<video>. MODEL is
anything `tiffin predict` takes (checkpoint, artifact, Hugging Face folder, embedded name), so
the same command scores a pretrained model zero-shot and the run fine-tuned from it. Scoring
goes through the host path (tiffin.host) and reads data with the torch-free readers, so an
ONNX artifact is scored where torch is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.errors import MediaError, TiffinError
from tiffin.host import Predictor, SpeechPredictor, VideoPredictor


# what `tiffin evaluate --tune` searches (the LM weight only matters with an LM)
TUNE_GRID = {"lm_weight": (0.5, 1.0, 2.0, 3.0, 4.0), "word_score": (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0)}


def evaluate(predictor: Predictor, data: Path, audio_column: str = "speech_files", text_column: str = "targets",
             clips: int = 1, beam=None, tune: bool = False, name: str | None = None) -> dict[str, Any]:
    """Metrics of `predictor` (tiffin.api.open_predictor opens one from a path) on `data`, decoded
    with beam search when `beam` (tiffin.ctc_beam.BeamOptions) is given; files that cannot be
    read are counted, not scored. With `tune`, the beam's lm_weight and word_score with the
    lowest WER on `data` (tune_decoder). `name`: the answer's `model` [default: the predictor's
    backbone]."""
    from tiffin.ctc_beam import BeamOptions
    from tiffin.tasks import TASKS
    from tiffin.train.predict import with_decoder

    if tune and not isinstance(beam, BeamOptions):
        raise TiffinError("--tune: give --decoder beam with --words (and --lm) to tune")
    name = name or predictor.backbone
    if tune:  # tune_decoder builds a decoder per grid point: none on the predictor
        if not isinstance(predictor, SpeechPredictor):
            raise TiffinError("--tune: tunes the beam decoder of a speech model; this is a video model")
        return {"task": predictor.task, "model": name,
                **tune_decoder(predictor, data, beam, audio_column=audio_column, text_column=text_column)}
    predictor = with_decoder(predictor, beam)
    scores = TASKS[predictor.task].part("evaluation")(predictor, data, audio_column=audio_column,
                                                      text_column=text_column, clips=clips)
    return {"task": predictor.task, "model": name, **scores}


def tune_decoder(predictor: SpeechPredictor, data: Path, beam, *, audio_column: str = "speech_files",
                 text_column: str = "targets") -> dict[str, Any]:
    """The point of TUNE_GRID (lm_weight x word_score; word_score alone without an LM) with the
    lowest WER on `data`, a dev set (tuning on the test set flatters it), and the score of the
    settings `beam` came with. The model runs once per recording; only decoding repeats.

    Example:
        >>> tiffin evaluate MODEL dev.csv --decoder beam --words words.txt --lm lm.arpa --tune
        >>> # then: tiffin export MODEL --words words.txt --lm lm.arpa --lm-weight W --word-score S
    """
    import dataclasses

    from tiffin.audio_io import load_audio
    from tiffin.ctc import error_rates
    from tiffin.ctc_beam import BeamDecoder

    rows, split = speech_rows(data, audio_column, text_column)
    logits, references = [], []
    for row in rows:
        if row.error:
            continue
        try:
            wave = load_audio(row.path, predictor.spec.sample_rate, row.start, row.end)
        except MediaError:
            continue
        logits.append(predictor.recording_logits(wave))
        references.append(predictor.vocab.normalise(row.text).text)
    if not logits:
        raise TiffinError(f"DATA {data}: no readable recording to tune on")
    weights = TUNE_GRID["lm_weight"] if beam.lm is not None else (beam.lm_weight,)
    points = [(w, s) for w in weights for s in TUNE_GRID["word_score"]]
    given = (beam.lm_weight, beam.word_score)
    grid = []
    for lm_weight, word_score in dict.fromkeys([given, *points]):
        decoder = BeamDecoder(predictor.vocab, dataclasses.replace(beam, lm_weight=lm_weight, word_score=word_score))
        wer, cer = error_rates(references, [decoder.decode(x) for x in logits])
        grid.append({"lm_weight": lm_weight, "word_score": word_score, "wer": round(wer, 4), "cer": round(cer, 4)})
    best = min(grid, key=lambda p: (p["wer"], p["cer"]))
    return {"utterances": len(logits), "unreadable": len(rows) - len(logits),
            "tuned": {"lm_weight": best["lm_weight"], "word_score": best["word_score"]},
            "wer": best["wer"], "cer": best["cer"], "given": grid[0], "grid": grid,
            **({"split": split} if split else {})}


def tuned_beam(predictor: SpeechPredictor, dev: Path, beam):
    """(`beam` with the lm_weight / word_score that decode `dev` best, tune_decoder's report); the
    options record where they came from (`tuned_on`, written into tiffin.json by an export)."""
    import dataclasses

    if not isinstance(predictor, SpeechPredictor):
        raise TiffinError("--tune-on: tunes the beam decoder of a speech model; this is a video model")
    got = tune_decoder(predictor, dev, beam)
    tuned_on = {"data": Path(dev).name, "utterances": got["utterances"], "wer": got["wer"],
                "given_wer": got["given"]["wer"]}
    return dataclasses.replace(beam, **got["tuned"], tuned_on=tuned_on), got


def speech_rows(data: Path, audio_column: str, text_column: str) -> tuple[list, str | None]:
    """(rows, which split) of a CSV/TSV, JSON lines, or a speech folder in any layout tiffin
    knows (its test split when it has one)."""
    from tiffin.train.speech_files import read_jsonl, read_table
    from tiffin.train.speech_layouts import read_layout

    split = None
    if Path(data).is_dir():
        read = read_layout(data, "DATA")
        split = "test" if "test" in read.splits else "train"
        rows = read.splits[split]
        split = f"{read.layout} {split if len(read.splits) > 1 else 'all'}"
    else:
        reader = read_jsonl if Path(data).suffix.lower() in (".json", ".jsonl") else read_table
        rows = reader(data, audio_column, text_column, "DATA")
    if not rows:
        raise TiffinError(f"DATA {data}: no rows")
    return rows, split


def speech_scores(predictor: SpeechPredictor, data: Path, *, audio_column: str, text_column: str, clips: int
                  ) -> dict[str, Any]:
    """CER and WER of the transcripts on a CSV/TSV, JSON lines, or a speech folder in any layout
    tiffin knows (its test split when it has one) (`clips` is a video option)."""
    from tiffin.ctc import error_rates

    rows, split = speech_rows(data, audio_column, text_column)
    got = predictor.predict([r.path for r in rows], spans=[(r.start, r.end) for r in rows])
    scored = [(r, g) for r, g in zip(rows, got) if "error" not in g and not r.error]
    references = [predictor.vocab.normalise(r.text).text for r, _ in scored]
    wer, cer = error_rates(references, [g["text"] for _, g in scored])
    return {"utterances": len(scored), "unreadable": len(rows) - len(scored), "cer": round(cer, 4),
            "wer": round(wer, 4), **({"split": split} if split else {})}


def video_scores(predictor: VideoPredictor, data: Path, *, audio_column: str, text_column: str, clips: int
                 ) -> dict[str, Any]:
    """Top-1 accuracy on a class folder (the column names are speech options)."""
    from tiffin.train.video_files import discover_folder

    samples = discover_folder(data, "DATA")
    labels = predictor.spec.labels
    unknown = sorted({s.label for s in samples} - set(labels))
    if unknown:
        raise TiffinError(f"DATA {data}: classes {unknown} are not among the model's labels "
                          f"({', '.join(labels)}); fine-tune on them first")
    got = predictor.predict([s.path for s in samples], top_k=1, clips=clips)
    scored = [(s, g) for s, g in zip(samples, got) if "error" not in g]
    correct = sum(g["labels"][0]["label"] == s.label for s, g in scored)
    return {"videos": len(scored), "unreadable": len(samples) - len(scored),
            "accuracy": round(correct / max(1, len(scored)), 4)}
