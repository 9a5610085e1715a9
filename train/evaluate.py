"""`tiffin evaluate MODEL DATA`: how well a model does on labelled data, before or after fine-tuning.

Speech: CER and WER of greedy transcripts against a CSV/TSV of `speech_files,targets` (the
training CSV format); video: top-1 accuracy on a class folder DATA/<label>/<video>. MODEL is
anything `tiffin predict` takes (checkpoint, artifact, Hugging Face folder, embedded name), so
the same command scores a pretrained model zero-shot and the run fine-tuned from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError


def load_any(model: Path):
    """(task, loaded model) for every kind of model `tiffin predict` accepts: checkpoint, artifact
    folder, Hugging Face folder, embedded model name."""
    from train.predict import load_speech_model, load_video_model, model_task

    task = model_task(model)
    if Path(model).is_dir() and (Path(model) / "tiffin.json").is_file():
        from export.artifact import load_artifact_model

        return task, load_artifact_model(Path(model))
    return task, (load_speech_model(model) if task == "speech-recognition" else load_video_model(model))


def evaluate(model: Path, data: Path, audio_column: str = "speech_files", text_column: str = "targets",
             clips: int = 1) -> dict[str, Any]:
    """Metrics of `model` on `data`; files that cannot be read are counted, not scored."""
    task, loaded = load_any(model)
    if task == "speech-recognition":
        from tiffin.ctc import Vocabulary, error_rates
        from train.predict import transcribe_files
        from train.speech_data import read_table

        rows = read_table(data, audio_column, text_column, "DATA")
        if not rows:
            raise TiffinError(f"DATA {data}: no rows")
        got = transcribe_files(loaded, [r.path for r in rows])
        scored = [(r, g) for r, g in zip(rows, got) if "error" not in g]
        vocab = Vocabulary(loaded.spec.vocab)
        references = [vocab.normalise(r.text).text for r, _ in scored]
        wer, cer = error_rates(references, [g["text"] for _, g in scored])
        return {"task": task, "model": str(model), "utterances": len(scored), "unreadable": len(rows) - len(scored),
                "cer": round(cer, 4), "wer": round(wer, 4)}
    from train.predict import classify_videos
    from train.video_data import discover_folder

    samples = discover_folder(data, "DATA")
    unknown = sorted({s.label for s in samples} - set(loaded.spec.labels))
    if unknown:
        raise TiffinError(f"DATA {data}: classes {unknown} are not among the model's labels "
                          f"({', '.join(loaded.spec.labels)}); fine-tune on them first")
    got = classify_videos(loaded, [s.path for s in samples], top_k=1, clips=clips)
    scored = [(s, g) for s, g in zip(samples, got) if "error" not in g]
    correct = sum(g["labels"][0]["label"] == s.label for s, g in scored)
    return {"task": task, "model": str(model), "videos": len(scored), "unreadable": len(samples) - len(scored),
            "accuracy": round(correct / max(1, len(scored)), 4)}
