"""`tiffin export` and `tiffin check` as Python functions: artifacts that describe themselves.

An artifact is a directory: the model file (model.onnx | model.pt | model.ptl) and tiffin.json
(schema version, task, backbone, labels or vocabulary, every preprocessing number, graph
inputs/outputs and dynamic axes, opset, precision, parity report, package versions, the model
file's sha256). The model file embeds the same JSON less the parity report and its own hash.
It is written to a temporary directory and moved into place only once parity passed, signed
(tiffin.sig: every file, with the user's key, tiffin/signing.py) so that a TorchScript, mobile
or .pt2 artifact, which is a program, loads where that key is trusted (tiffin/trust.py).
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

from tiffin.export.formats import FORMATS
from tiffin.export.parity import AgreementTooLow, ToleranceExceeded, check_parity
from tiffin.export.specs import ExportSpec
from tiffin.artifact import SCHEMA_VERSION, fixed_batch, read_artifact, sha256
from tiffin.host import open_session
from tiffin.signing import sign_artifact
from tiffin.tasks import TASKS
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.train.backbones import EMBEDDED_MODELS

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
    beam: Any = None  # tiffin.ctc_beam.BeamOptions: a word list / LM the artifact decodes with
    check_budget_s: float | None = 900.0  # the parity check's time budget (None: unbounded)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tiffin", "torch", "onnx", "onnxruntime", "transformers", "pytorchvideo"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def load_source(model: Path | str, batch: int | None = None):
    """(task, loaded model, export spec) for a checkpoint, a Hugging Face speech folder or an
    embedded model, read once."""
    from tiffin.train.predict import load_model

    loaded = load_model(model)
    return loaded.task, loaded, export_spec_of(loaded, batch)


def export_spec_of(loaded, batch: int | None = None) -> ExportSpec:
    """The export spec (graph inputs, tracing sample, tolerances) of a loaded model."""
    return TASKS[loaded.task].part("export_spec")(loaded.spec, batch)


def _describe(task: str, loaded, spec: ExportSpec, opts: ExportOptions, out: Path) -> dict[str, Any]:
    fmt = FORMATS[opts.format]
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "task": task, "backbone": loaded.backbone, "format": opts.format,
        "precision": opts.precision, "model_file": fmt.file, "source": _source(opts.model, out),
        "preprocessing": loaded.preprocessing(), **spec.describe(), "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if fmt.uses_opset:
        from tiffin.export.onnx_format import DEFAULT_OPSET

        meta["opset"] = opts.opset or DEFAULT_OPSET
    row = TASKS[task]
    meta[row.classes_key] = list(row.classes(loaded.spec))
    return meta


def _source(model: Path | str, out: Path) -> dict[str, Any]:
    """Where an artifact came from, without the exporter's folders: an embedded model's name, or
    the file (or folder) name with the sha256 of its weights, and its path relative to the
    artifact when the two sit within three folders of a common one (runs/NAME/checkpoints and
    runs/NAME/export), so `tiffin check` finds it again."""
    if model is None:  # an in-memory model (the Python API's model.export()): no file to point at
        return {"name": "in-memory model", "sha256": None, "relative": None}
    if str(model) in EMBEDDED_MODELS:
        return {"name": str(model), "embedded": True}
    path = Path(model).resolve()
    weights = path if path.is_file() else next(
        (path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    relative = os.path.relpath(path, out.resolve())
    climbs = len([part for part in Path(relative).parts if part == ".."])
    near = climbs <= 3 and os.path.commonpath([path, out.resolve()]) != os.path.abspath(os.sep)
    return {"name": path.name, "sha256": sha256(weights) if weights else None, "relative": relative if near else None}


def source_model(path: Path, meta: dict[str, Any], given: Path | None = None,
                 hint: str = "give it with --source CHECKPOINT") -> Path | str:
    """The model an artifact was exported from: `given`, else the embedded name or the relative
    path tiffin.json records (an absolute one in artifacts of earlier tiffins).

    Raises:
        TiffinError: the source cannot be found; says what to pass.
    """
    recorded = meta.get("source")
    if given is not None:
        candidate = Path(given)
    elif isinstance(recorded, str):  # written by tiffin before 0.2
        candidate = Path(recorded)
        if recorded in EMBEDDED_MODELS:
            return recorded
    elif isinstance(recorded, dict) and recorded.get("embedded"):
        return recorded["name"]
    elif isinstance(recorded, dict) and recorded.get("relative"):
        candidate = Path(path) / recorded["relative"]
    else:
        name = recorded.get("name") if isinstance(recorded, dict) else "?"
        raise TiffinError(f"{path}: the model it was exported from ({name}) is not recorded beside it; {hint}")
    if not candidate.exists():
        raise TiffinError(f"{path}: its source model {candidate.name} is gone (looked at {candidate}); {hint}")
    return candidate


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
    if (out.exists() or out.is_symlink()) and not opts.force:
        raise TiffinError(f"--out {out}: already exists; pass --force to replace it")
    if out.exists() or out.is_symlink():
        _check_replaceable(out)
    return out


def artifact_file_names() -> frozenset[str]:
    """Every name an export writes into an artifact folder: a format's model file, tiffin.json,
    the decoder's word list and LM, the signature."""
    from tiffin.ctc_beam import DECODER_FILES
    from tiffin.signing import SIGNATURE_FILE

    return frozenset({f.file for f in FORMATS.values()} | set(DECODER_FILES.values())
                     | {"tiffin.json", SIGNATURE_FILE})


def _check_replaceable(out: Path) -> None:
    """Refuse to let --force replace what is not an artifact: `out` must be an empty folder, or
    one holding tiffin.json and only regular files an export writes. --force once removed a
    folder holding a thesis; whatever else is there is the user's, and stays.

    Raises:
        TiffinError: naming --out and what is in the way; nothing was removed.
    """
    keep = ("--force replaces only an artifact folder or an empty one; nothing was removed: move it or give "
            "another --out")
    if out.is_symlink() or not out.is_dir():
        kind = "a symbolic link" if out.is_symlink() else "a file, not a folder"
        raise TiffinError(f"--out {out}: is {kind}; {keep}")
    names = artifact_file_names()
    entries = sorted(os.scandir(out), key=lambda e: e.name)
    for entry in entries:
        if entry.name not in names or not entry.is_file(follow_symlinks=False):
            what = "a folder" if entry.is_dir(follow_symlinks=False) else "a file"
            raise TiffinError(f"--out {out}: holds {entry.name!r}, {what} no export writes; {keep}")
    if entries and not (out / "tiffin.json").is_file():
        raise TiffinError(f"--out {out}: has no tiffin.json, so it is not an artifact; {keep}")


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
        from tiffin.train.table_io import open_table

        _, reader = open_table(path, option, "a CSV whose first column lists media files")
        first = reader.fieldnames[0] if reader.fieldnames else None
        files = [path.parent / row[first] for row in reader if first and row.get(first)]
    else:
        files = [path]
    batches = TASKS[task].part("samples")(loaded, files, limit)
    if not batches:
        raise TiffinError(f"{option} {path}: no {TASKS[task].short} files")
    return batches


def speech_samples(loaded, files: list[Path], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """Padded waveform batches (4 a batch) of the first `limit` audio files."""
    from tiffin.audio_io import is_audio_file, load_audio

    waves = [load_audio(f, loaded.spec.sample_rate) for f in files if is_audio_file(f)][:limit]
    batches = []
    for k in range(0, len(waves), 4):
        group = waves[k : k + 4]
        batch = torch.zeros(len(group), max(len(w) for w in group))
        for i, w in enumerate(group):
            batch[i, : len(w)] = torch.from_numpy(w)
        batches.append((batch, torch.tensor([len(w) for w in group])))
    return batches


def video_samples(loaded, files: list[Path], limit: int) -> list[tuple[torch.Tensor, ...]]:
    """Clip batches (4 a batch) of the first `limit` video files, one clip each as validation decodes it."""
    from tiffin.inference import video_clips
    from tiffin.video_io import is_video_file

    clips = [video_clips(f, loaded.spec, 1)[0] for f in [f for f in files if is_video_file(f)][:limit]]
    return [(torch.from_numpy(np.stack(clips[k : k + 4])),) for k in range(0, len(clips), 4)]


def _slow_hint(precision: str, exporting: bool = True) -> str:
    """What to do about a check past its budget: the precision's own reason first, where there is one."""
    from tiffin.cpu import precision_warning

    wrote = "; nothing was written" if exporting else ""
    reason = precision_warning(precision)
    if reason:
        return f"{reason}{wrote}. Export fp32, or give --check-budget more seconds"
    return f"give --check-budget more seconds (or fewer --check-data files){wrote}"


def _int8_hint(meta: dict[str, Any], static: bool) -> str:
    """What to try when the gate refuses an int8 artifact: how it was quantised here, and the ways out."""
    how = meta.get("quantization", {}).get("why", "")
    more = "more, and more varied, --calibration-data (up to 64 of your clips are used), " if static else ""
    return (f"nothing was written. Quantised for this CPU ({how}); try {more}--precision fp16 or fp32, or "
            "TorchScript bf16 on a CPU with bf16 (tiffin benchmark measures each)")


def export_model(opts: ExportOptions, loaded=None) -> tuple[Path, dict[str, Any]]:
    """Export, check parity, and move the artifact into place; `loaded` is opts.model already
    loaded (tiffin.train.predict.load_model), for callers that export one model many times.

    Returns:
        (artifact directory, tiffin.json contents).

    Raises:
        TiffinError: bad options; ParityError (a TiffinError) when the artifact is refused.
    """
    out = _check_options(opts)
    if loaded is None:
        task, loaded, spec = load_source(Path(opts.model), opts.batch)
    else:
        task, spec = loaded.task, export_spec_of(loaded, opts.batch)
    fmt = FORMATS[opts.format]
    meta = _describe(task, loaded, spec, opts, out)
    samples = spec.check_samples() + (real_samples(task, loaded, Path(opts.check_data)) if opts.check_data else [])
    calibration = None
    if opts.precision == "int8" and TASKS[task].static_int8:
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
        agreement = TASKS[task].part("agreement")(meta)
        if opts.beam is not None and hasattr(agreement, "use_beam"):  # beam transcripts must agree too
            from tiffin.ctc_beam import BeamDecoder

            agreement.use_beam(BeamDecoder(Vocabulary(tuple(meta["vocab"])), opts.beam))
        fmt.export(loaded.net, spec, tmp / fmt.file, opts.precision, opts.opset, meta, calibration=calibration)
        # signed as this run made it, so the gate opens it the way every reader does (verified by
        # tiffin.host.open_session), not around the trust check; signed again once complete
        sign_artifact(tmp)
        try:
            meta["parity"] = check_parity(loaded.net, open_session(tmp, meta), samples, spec.tolerances[opts.precision],
                                          agreement, _conv(loaded), opts.check_budget_s, _slow_hint(opts.precision))
        except (ToleranceExceeded, AgreementTooLow) as err:
            if opts.precision != "int8":
                raise
            raise type(err)(f"{err}; {_int8_hint(meta, TASKS[task].static_int8)}") from None
        meta["sha256"] = sha256(tmp / fmt.file)
        if opts.beam is not None:
            meta["decoder"] = _pack_decoder(opts.beam, meta, tmp)
        (tmp / "tiffin.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        sign_artifact(tmp)  # every file, tiffin.json included, with the user's key (tiffin/signing.py)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, meta


def _pack_decoder(beam, meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Copy the word list and LM into the artifact folder and describe them for tiffin.json; the
    decoder is built once first, so a bad file is refused before anything is written."""
    from tiffin.ctc_beam import DECODER_FILES, BeamDecoder, describe, lm_file_name

    if meta["task"] != "speech-recognition":
        raise TiffinError("--words/--lm: a word list and language model decode speech; this is a video model")
    BeamDecoder(Vocabulary(tuple(meta["vocab"])), beam)
    files = {}
    for key, source, name in (("words", beam.words, DECODER_FILES["words"]),
                              ("lm", beam.lm, lm_file_name(beam.lm) if beam.lm else None)):
        if source is not None:
            shutil.copyfile(source, folder / name)
            files[key] = (name, sha256(folder / name))
    return describe(beam, files)


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


def check_artifact(path: Path, data: Path | None = None, source: Path | None = None, loaded=None,
                   runtime: str | None = None, budget_s: float | None = 900.0, trust: bool = False) -> dict[str, Any]:
    """Re-run the parity report of an artifact against the model it was exported from (`source`,
    else `loaded`, a model already in memory, else the one tiffin.json records), run on `runtime`
    (a row of tiffin.runtimes; default: the recorded one, else the format's first); the report
    says which runtime and whether that model's weights are still the ones exported. A program
    artifact opens only when signed by a trusted key or `trust` (tiffin.host.open_session)."""
    meta = read_artifact(path)
    if loaded is not None and source is None:
        model, task, spec = None, loaded.task, export_spec_of(loaded, fixed_batch(meta))
    else:
        model = source_model(Path(path), meta, source)
        task, loaded, spec = load_source(model, fixed_batch(meta))
    samples = spec.check_samples() + (real_samples(task, loaded, data) if data else [])
    agreement = TASKS[task].part("agreement")(meta)
    if meta.get("decoder") and hasattr(agreement, "use_beam"):
        from tiffin.ctc_beam import BeamDecoder, options_of

        agreement.use_beam(BeamDecoder(Vocabulary(tuple(meta["vocab"])), options_of(Path(path), meta["decoder"])))
    from tiffin.host import chosen_runtime

    row = chosen_runtime(path, meta, runtime)
    chosen = row.name
    # a runtime computing in a looser precision than the file's (OpenVINO's bf16 hint) is judged by its tolerances
    judged = max([meta["precision"], row.computes or meta["precision"]], key=list(spec.tolerances).index)
    report = check_parity(loaded.net, open_session(path, meta, runtime=chosen, trust=trust), samples,
                          spec.tolerances[judged], agreement, _conv(loaded), budget_s,
                          _slow_hint(judged, exporting=False))
    report["runtime"] = chosen
    recorded = meta.get("source")
    if isinstance(recorded, dict) and recorded.get("sha256") and model is not None and Path(model).is_file():
        report["source_sha256_matches"] = sha256(Path(model)) == recorded["sha256"]
    return report


def _conv(loaded) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """A speech network's conv kernels and strides (how many frames each utterance owns)."""
    return (loaded.net.kernels, loaded.net.strides) if getattr(loaded.net, "kernels", None) else None
