"""`tiffin export` and `tiffin check` as Python functions: artifacts that describe themselves.

An artifact is a directory: the model file (model.onnx | model.pt | model.ptl) and tiffin.json
(schema version, task, backbone, labels or vocabulary, every preprocessing number, graph
inputs/outputs and dynamic axes, opset, precision, parity report, package versions, the model
file's sha256). The model file embeds the same JSON less the parity report and its own hash.
It is written to a temporary directory and moved into place only once parity passed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.formats import FORMATS
from export.parity import check_parity
from export.specs import ExportSpec, speech_export_spec, video_export_spec
from tiffin.artifact import SCHEMA_VERSION, fixed_batch, read_artifact, sha256
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from train.backbones import EMBEDDED_MODELS

@dataclass
class ExportOptions:
    """The options of `tiffin export`."""

    model: Path
    format: str = "onnx"
    precision: str = "fp32"
    opset: int | None = None
    out: Path | None = None
    check_data: Path | None = None
    calibration_data: Path | None = None
    force: bool = False
    batch: int | None = None  # None: dynamic batch axis


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tiffin", "torch", "onnx", "onnxruntime", "transformers", "pytorchvideo"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def load_source(model: Path, batch: int | None = None):
    """(task, loaded model, export spec) for a checkpoint or a Hugging Face speech folder."""
    from train.predict import load_speech_model, load_video_model, model_task

    task = model_task(model)
    if task == "speech-recognition":
        loaded = load_speech_model(model)
        return task, loaded, speech_export_spec(loaded.spec.sample_rate, len(loaded.spec.vocab), batch)
    loaded = load_video_model(model)
    spec = loaded.spec
    return task, loaded, video_export_spec(spec.num_frames, spec.crop_size, len(spec.labels), batch)


def _describe(task: str, loaded, spec: ExportSpec, opts: ExportOptions) -> dict[str, Any]:
    fmt = FORMATS[opts.format]
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "task": task, "backbone": loaded.backbone, "format": opts.format,
        "precision": opts.precision, "model_file": fmt.file, "source": _source(opts.model),
        "preprocessing": loaded.spec.to_dict(), **spec.describe(), "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if fmt.uses_opset:
        from export.onnx_format import DEFAULT_OPSET

        meta["opset"] = opts.opset or DEFAULT_OPSET
    if task == "speech-recognition":
        meta["vocab"] = list(loaded.spec.vocab)
        meta["preprocessing"]["conv_stride"] = list(loaded.net.strides)
        meta["preprocessing"]["conv_kernel"] = list(loaded.net.kernels)
    else:
        meta["labels"] = list(loaded.spec.labels)
    return meta


def _source(model: Path) -> str:
    """Where the artifact came from: an embedded model's name, else the absolute path."""
    return str(model) if str(model) in EMBEDDED_MODELS else str(Path(model).resolve())


def _check_options(opts: ExportOptions) -> Path:
    if opts.format not in FORMATS:
        raise TiffinError(f"--format {opts.format}: choose one of {', '.join(FORMATS)}")
    fmt = FORMATS[opts.format]
    if opts.precision not in fmt.precisions:
        supported = {name: f.precisions for name, f in FORMATS.items()}
        raise TiffinError(f"--precision {opts.precision}: {opts.format} exports {', '.join(fmt.precisions)} "
                          f"(all formats: {supported})")
    if opts.batch is not None and opts.batch < 1:
        raise TiffinError(f"--batch {opts.batch}: give 'dynamic' or a positive batch size")
    if opts.opset is not None and (not fmt.uses_opset or not 13 <= opts.opset <= 18):
        raise TiffinError(f"--opset {opts.opset}: give 13..18, and only with --format onnx")
    out = Path(opts.out) if opts.out else default_out(Path(opts.model), opts.format, opts.precision)
    if out.exists() and not opts.force:
        raise TiffinError(f"--out {out}: already exists; pass --force to replace it")
    return out


def default_out(model: Path, format: str, precision: str) -> Path:
    """runs/NAME/export/FORMAT-PRECISION for a checkpoint in runs/NAME/checkpoints/; DIR-FORMAT-PRECISION for a
    folder; runs/SHORT-NAME/export/FORMAT-PRECISION for an embedded model."""
    if str(model) in EMBEDDED_MODELS:
        return Path("runs") / str(model).split("/")[1] / "export" / f"{format}-{precision}"
    model = model.resolve()
    if model.is_dir():
        return model.parent / f"{model.name}-{format}-{precision}"
    return model.parent.parent / "export" / f"{format}-{precision}"


def real_samples(task: str, loaded, path: Path, limit: int = 4, option: str = "--check-data"
                 ) -> list[tuple[torch.Tensor, ...]]:
    """Inputs from real files, at most `limit`, one batch per 4: a media file, a folder of them, or a
    CSV/TSV whose first column lists them (relative to the CSV, as training CSVs do)."""
    path = Path(path)
    if not path.exists():
        raise TiffinError(f"{option} {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.suffix.lower() in (".csv", ".tsv"):
        from train.table_io import open_table

        _, reader = open_table(path, option, "a CSV whose first column lists media files")
        first = reader.fieldnames[0] if reader.fieldnames else None
        files = [path.parent / row[first] for row in reader if first and row.get(first)]
    else:
        files = [path]
    if task == "speech-recognition":
        from tiffin.audio_io import is_audio_file, load_audio

        waves = [load_audio(f, loaded.spec.sample_rate) for f in files if is_audio_file(f)][:limit]
        if not waves:
            raise TiffinError(f"{option} {path}: no audio files")
        batches = []
        for k in range(0, len(waves), 4):
            group = waves[k : k + 4]
            batch = torch.zeros(len(group), max(len(w) for w in group))
            for i, w in enumerate(group):
                batch[i, : len(w)] = torch.from_numpy(w)
            batches.append((batch, torch.tensor([len(w) for w in group])))
        return batches
    from tiffin.video_io import is_video_file
    from tiffin.inference import video_clips

    clips = [video_clips(f, loaded.spec, 1)[0] for f in [f for f in files if is_video_file(f)][:limit]]
    if not clips:
        raise TiffinError(f"{option} {path}: no video files")
    return [(torch.from_numpy(np.stack(clips[k : k + 4])),) for k in range(0, len(clips), 4)]


def export_model(opts: ExportOptions) -> tuple[Path, dict[str, Any]]:
    """Export, check parity, and move the artifact into place.

    Returns:
        (artifact directory, tiffin.json contents).

    Raises:
        TiffinError: bad options; ParityError (a TiffinError) when the artifact is refused.
    """
    out = _check_options(opts)
    task, loaded, spec = load_source(Path(opts.model), opts.batch)
    fmt = FORMATS[opts.format]
    meta = _describe(task, loaded, spec, opts)
    samples = spec.check_samples() + (real_samples(task, loaded, Path(opts.check_data)) if opts.check_data else [])
    calibration = None
    if opts.precision == "int8" and task == "video-classification":
        if opts.calibration_data is None:
            raise TiffinError("--precision int8 for video is static quantisation: give --calibration-data DIR "
                              "(a few dozen of your videos)")
        calibration = real_samples(task, loaded, Path(opts.calibration_data), limit=64, option="--calibration-data")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fmt.export(loaded.net, spec, tmp / fmt.file, opts.precision, opts.opset, meta, calibration=calibration)
        vocab = Vocabulary(tuple(meta["vocab"])) if task == "speech-recognition" else None
        meta["parity"] = check_parity(loaded.net, fmt.runner(tmp / fmt.file, spec), samples,
                                      spec.tolerances[opts.precision], task, vocab, _conv(loaded))
        meta["sha256"] = sha256(tmp / fmt.file)
        (tmp / "tiffin.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, meta


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` so that a complete artifact, old or new, is at `out` at every moment:
    an atomic exchange of the two folders where the system has one (Linux), else two renames."""
    if out.exists() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old artifact
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove_stale_partials(out: Path) -> None:
    """Remove what exports of `out` killed midway left beside it (their process is gone)."""
    for leftover in out.parent.glob(f".{out.name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists():
            shutil.rmtree(leftover, ignore_errors=True)


def artifact_spec(meta: dict[str, Any]) -> ExportSpec:
    pre, batch = meta["preprocessing"], fixed_batch(meta)
    if meta["task"] == "speech-recognition":
        return speech_export_spec(pre["sample_rate"], len(meta["vocab"]), batch)
    return video_export_spec(pre["num_frames"], pre["crop_size"], len(meta["labels"]), batch)


def check_artifact(path: Path, data: Path | None = None) -> dict[str, Any]:
    """Re-run the parity report of an artifact against the model it was exported from."""
    meta = read_artifact(path)
    source = Path(meta["source"])
    if not source.exists() and meta["source"] not in EMBEDDED_MODELS:
        raise TiffinError(f"{path}: its source model {source} is gone; parity needs the PyTorch model")
    task, loaded, spec = load_source(source, fixed_batch(meta))
    fmt = FORMATS[meta["format"]]
    samples = spec.check_samples() + (real_samples(task, loaded, data) if data else [])
    vocab = Vocabulary(tuple(meta["vocab"])) if task == "speech-recognition" else None
    return check_parity(loaded.net, fmt.runner(Path(path) / fmt.file, spec), samples,
                        spec.tolerances[meta["precision"]], task, vocab, _conv(loaded))


def _conv(loaded) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A speech network's conv kernels and strides (how many frames each utterance owns)."""
    return (loaded.net.kernels, loaded.net.strides) if getattr(loaded.net, "kernels", None) else None


class ArtifactNet:
    """An artifact's runner called like the PyTorch network (torch tensors in and out), so
    prediction code serves checkpoints and artifacts alike."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.runner = FORMATS[meta["format"]].runner(Path(path) / meta["model_file"], artifact_spec(meta))
        self.kernels = tuple(meta["preprocessing"].get("conv_kernel", ()))
        self.strides = tuple(meta["preprocessing"].get("conv_stride", ()))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.runner(*inputs)))


def load_artifact_model(path: Path):
    """An artifact wrapped like a loaded checkpoint, for train.predict's classify/transcribe functions."""
    from tiffin.spec import SpeechSpec, VideoSpec
    from train.predict import LoadedSpeechModel, LoadedVideoModel

    meta = read_artifact(Path(path))
    net = ArtifactNet(Path(path), meta)
    if meta["task"] == "speech-recognition":
        return LoadedSpeechModel(net, SpeechSpec.from_dict(meta["preprocessing"]), meta["backbone"])
    return LoadedVideoModel(net, VideoSpec.from_dict(meta["preprocessing"]), meta["backbone"])
