"""`tiffin export` as a Python function: a model in, an artifact folder out, behind the parity gate.

The artifact (tiffin/artifact_json.py says what it holds) is built in a partial folder beside
`--out` (export/artifact_folder.py): the exporter writes the model file (and, for an ONNX
model past protobuf's 2 GB limit, its weights file model.onnx.data), embedding the tiffin.json
it is given less the parity report and the files' hashes, and returns the fields it adds
(the weights file's hash among them); the parity gate (export/parity.py) runs the file as every reader opens it and
returns its report; the decoder's files are copied in; tiffin.json is written once, by
tiffin.artifact_json.write_meta; the folder is signed (tiffin.sig: every file, with the user's
key, tiffin/signing.py, so that a TorchScript, mobile or .pt2 artifact, which is a program,
loads where that key is trusted: tiffin/trust.py) and moved into place only then. A refused
export leaves nothing at `--out`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.artifact_json import sha256, write_meta
from tiffin.artifact_schema import SCHEMA_VERSION
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.export.artifact_folder import check_replaceable, default_out, move_into_place, partial_folder
from tiffin.export.formats import FORMATS
from tiffin.export.parity import AgreementTooLow, ToleranceExceeded, check_parity, conv_of, slow_hint
from tiffin.export.real_samples import real_samples
from tiffin.export.source_model import describe_source, export_spec_of, load_source, versions
from tiffin.export.specs import ExportSpec
from tiffin.host import open_session
from tiffin.signing import sign_artifact
from tiffin.tasks import TASKS


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


def _describe(task: str, loaded, spec: ExportSpec, opts: ExportOptions, out: Path) -> dict[str, Any]:
    """tiffin.json as known before the export: what the model, its spec and the options say."""
    fmt = FORMATS[opts.format]
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "task": task, "backbone": loaded.backbone, "format": opts.format,
        "precision": opts.precision, "model_file": fmt.file, "source": describe_source(opts.model, out),
        "preprocessing": loaded.preprocessing(), **spec.describe(), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if fmt.uses_opset:
        from tiffin.export.onnx_format import DEFAULT_OPSET

        meta["opset"] = opts.opset or DEFAULT_OPSET
    row = TASKS[task]
    meta[row.classes_key] = list(row.classes(loaded.spec))
    return meta


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
        check_replaceable(out)
    return out


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
        (artifact directory, tiffin.json contents as written).

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
    tmp = partial_folder(out)
    try:
        agreement = TASKS[task].part("agreement")(meta)
        if opts.beam is not None and hasattr(agreement, "use_beam"):  # beam transcripts must agree too
            from tiffin.ctc_beam import BeamDecoder

            agreement.use_beam(BeamDecoder(Vocabulary.of_artifact(meta), opts.beam))
        # the exporter embeds `meta` in the model file and returns what it adds (ONNX int8: quantization;
        # ONNX past 2 GB: external_data, the hash of model.onnx.data, which every read checks)
        added = fmt.export(loaded.net, spec, tmp / fmt.file, opts.precision, opts.opset, meta,
                           calibration=calibration)
        meta = {**meta, **(added or {})}
        # signed as this run made it, so the gate opens it the way every reader does (verified by
        # tiffin.host.open_session), not around the trust check; signed again once complete
        sign_artifact(tmp)
        try:
            parity = check_parity(loaded.net, open_session(tmp, meta), samples, spec.tolerances[opts.precision],
                                  agreement, conv_of(loaded), opts.check_budget_s, slow_hint(opts.precision))
        except (ToleranceExceeded, AgreementTooLow) as err:
            if opts.precision != "int8":
                raise
            raise type(err)(f"{err}; {_int8_hint(meta, TASKS[task].static_int8)}") from None
        meta = {**meta, "parity": parity, "sha256": sha256(tmp / fmt.file)}
        if opts.beam is not None:
            meta = {**meta, "decoder": _pack_decoder(opts.beam, meta, tmp)}
        meta = write_meta(tmp, meta)
        sign_artifact(tmp)  # every file, tiffin.json included, with the user's key (tiffin/signing.py)
        move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, meta


def _pack_decoder(beam, meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Copy the word list and LM into the artifact folder and return tiffin.json's `decoder`; the
    decoder is built once first, so a bad file is refused before anything is written."""
    from tiffin.ctc_beam import DECODER_FILES, BeamDecoder, describe, lm_file_name

    if meta["task"] != "speech-recognition":
        raise TiffinError("--words/--lm: a word list and language model decode speech; this is a video model")
    BeamDecoder(Vocabulary.of_artifact(meta), beam)
    files = {}
    for key, source, name in (("words", beam.words, DECODER_FILES["words"]),
                              ("lm", beam.lm, lm_file_name(beam.lm) if beam.lm else None)):
        if source is not None:
            shutil.copyfile(source, folder / name)
            files[key] = (name, sha256(folder / name))
    return describe(beam, files)
