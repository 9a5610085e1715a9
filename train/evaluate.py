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

from tiffin.errors import TiffinError
from tiffin.host import Predictor, SpeechPredictor, VideoPredictor


def evaluate(model: Path | Predictor, data: Path, audio_column: str = "speech_files", text_column: str = "targets",
             clips: int = 1, beam=None) -> dict[str, Any]:
    """Metrics of `model` (a path, or a predictor already opened) on `data`, decoded with beam
    search when `beam` (tiffin.ctc_beam.BeamOptions) is given; files that cannot be read are
    counted, not scored."""
    from tiffin.tasks import TASKS
    from tiffin.train.predict import load_predictor, with_decoder

    predictor = model if isinstance(model, (VideoPredictor, SpeechPredictor)) else load_predictor(model)
    predictor = with_decoder(predictor, beam)
    name = str(model) if isinstance(model, (str, Path)) else predictor.backbone
    scores = TASKS[predictor.task].part("evaluation")(predictor, data, audio_column=audio_column,
                                                      text_column=text_column, clips=clips)
    return {"task": predictor.task, "model": name, **scores}


def speech_scores(predictor: SpeechPredictor, data: Path, *, audio_column: str, text_column: str, clips: int
                  ) -> dict[str, Any]:
    """CER and WER of the transcripts on a CSV/TSV, JSON lines, or a speech folder in any layout
    tiffin knows (its test split when it has one) (`clips` is a video option)."""
    from tiffin.ctc import error_rates
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
