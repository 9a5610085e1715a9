"""CLI of the export stage: `tiffin export` and `tiffin check` (heavy imports inside the commands)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from tiffin.errors import reported
from tiffin.runtimes import runtime_help


from tiffin.export.formats import FORMATS, PRECISIONS

# CLI choices generated from the formats table they mirror
ExportFormat = Enum("ExportFormat", {name: name for name in FORMATS}, type=str)
ExportPrecision = Enum("ExportPrecision", {name: name for name in PRECISIONS}, type=str)
# every command that opens an artifact takes it (tiffin.trust): naming the artifact, not a bare flag
TRUST = typer.Option(None, "--trust", metavar="ARTIFACT", help="Trust this artifact (name the one the command "
                     "opens): a TorchScript, mobile or .pt2 artifact is a program and loads only when signed by a "
                     "trusted key (tiffin trust) or named here or in TIFFIN_TRUST.")


@reported
def export_command(
    model: Path = typer.Argument(..., help="A .ckpt written by `tiffin train`, a Hugging Face speech model folder, "
                                 "or an embedded model (tiffin/tiny-motion, tiffin/tiny-en)."),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format"),
    precision: ExportPrecision = typer.Option(ExportPrecision.fp32, help="; ".join(
        f"{f.name}: {'|'.join(f.precisions)}" for f in FORMATS.values()) + "."),
    opset: int = typer.Option(None, help="ONNX opset, 13..18 [default: 17]."),
    out: Path = typer.Option(None, help="Artifact folder [default: runs/NAME/export/FORMAT-PRECISION]."),
    check_data: Path = typer.Option(None, help="Real videos or recordings (a file or folder) to check parity on too."),
    calibration_data: Path = typer.Option(None, help="Videos to calibrate static int8 quantisation on (video int8)."),
    batch: str = typer.Option("dynamic", help="'dynamic' or a fixed batch size baked into the graph."),
    force: bool = typer.Option(False, help="Replace an existing artifact at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print tiffin.json."),
    words: Path = typer.Option(None, help="Speech: a word list the artifact decodes with (beam search; copied in)."),
    lm: Path = typer.Option(None, help="Speech: a KenLM model (ARPA or binary) the artifact decodes with (copied in)."),
    beam_width: int = typer.Option(50, min=1, help="Speech, with --words/--lm: hypotheses kept per frame."),
    lm_weight: float = typer.Option(2.0, help="Speech, with --lm: weight of the LM's log-probability."),
    word_score: float = typer.Option(0.0, help="Speech, with --words/--lm: score added per word."),
    hotword: list[str] = typer.Option(None, "--hotword", help="Speech, with --words/--lm: a word to favour "
                                      "(repeat for more)."),
    hotword_weight: float = typer.Option(5.0, help="Speech, with --hotword: score added each time one is chosen."),
    check_budget: float = typer.Option(900, min=0.001, help="Seconds the parity check may take; past them (judged "
                                       "after each check batch) the export is refused, saying why."),
    tune_on: Path = typer.Option(None, help="Speech, with --words/--lm: choose --lm-weight and --word-score on this "
                                 "dev set (CSV/TSV, JSON lines or a speech folder; not the test set) and record them."),
) -> None:
    """Export a model to ONNX, TorchScript or mobile; refused (nothing written) unless it matches PyTorch."""
    from tiffin.export.exporting import ExportOptions, export_model
    from tiffin.errors import TiffinError

    if batch != "dynamic" and not batch.isdigit():
        raise TiffinError(f"--batch {batch}: give 'dynamic' or a positive batch size")
    fixed = None if batch == "dynamic" else int(batch)
    from tiffin.ctc_beam import BeamOptions

    if hotword and not (words or lm):
        raise TiffinError("--hotword: give it with --words or --lm")
    beam = BeamOptions(words, lm, beam_width, lm_weight, word_score, hotwords=tuple(hotword or ()),
                       hotword_weight=hotword_weight) if words or lm else None
    if tune_on is not None:
        beam = _tuned(model, tune_on, beam)
    from tiffin.cpu import precision_warning

    warning = precision_warning(precision.value)
    if warning:  # before the export starts: an emulated bf16 export of a SlowFast-R50 ran past 17 minutes
        typer.echo(f"warning: {warning}", err=True)
    out_dir, meta = export_model(ExportOptions(model, format.value, precision.value, opset, out, check_data,
                                               calibration_data, force, fixed, beam, check_budget))
    if as_json:
        typer.echo(json.dumps(meta, indent=2, ensure_ascii=False))
        return
    parity = meta["parity"]
    agreement = (f"top-1 agreement {parity['top1_agreement']:.0%}" if "top1_agreement" in parity
                 else f"transcript CER {parity['transcript_cer']:.3f}")
    typer.echo(f"{out_dir}: {meta['format']} {meta['precision']}, parity ok (max |diff| {parity['max_abs_diff']:.2e}, "
               f"{agreement} on {len(parity['samples'])} check batches)")


def _tuned(model: Path, dev: Path, beam):
    """`beam` with the lm_weight / word_score that decode `dev` best (tiffin.train.evaluate.tuned_beam)."""
    from tiffin.errors import TiffinError
    from tiffin.train.evaluate import tuned_beam
    from tiffin.api import open_predictor

    if beam is None:
        raise TiffinError("--tune-on: give --words (and --lm): it tunes the beam decoder's weights")
    beam, got = tuned_beam(open_predictor(model), dev, beam)
    typer.echo(f"tuned on {dev} ({got['utterances']} recordings): --lm-weight {beam.lm_weight:g} --word-score "
               f"{beam.word_score:g}, WER {got['wer']} (given settings: {got['given']['wer']})", err=True)
    return beam


@reported
def check_command(
    artifact: Path = typer.Argument(..., help="An artifact folder written by `tiffin export`."),
    data: Path = typer.Option(None, help="Real videos or recordings to check on too."),
    source: Path = typer.Option(None, help="The checkpoint or folder it was exported from [default: the one "
                                "tiffin.json records, relative to the artifact]."),
    runtime: str = typer.Option(None, help=f"Check it as this runtime runs it ({runtime_help()}) [default: "
                                "the one tiffin.json records, else the format's first]."),
    check_budget: float = typer.Option(900, min=0.001, help="Seconds the check may take (judged after each batch)."),
    trust: list[Path] = TRUST,
) -> None:
    """Re-run an artifact's parity check against the model it came from; exit 2 if it fails."""
    from tiffin.export.recheck import check_artifact
    from tiffin.trust import named

    report = check_artifact(artifact, data, source, runtime=runtime, budget_s=check_budget,
                            trust=named(artifact, trust))
    typer.echo(json.dumps(report, indent=2))


@reported
def benchmark_command(
    model: Path = typer.Argument(..., help="A .ckpt, a Hugging Face speech folder, an embedded model name, or an "
                                 "artifact folder (timed as it is, against the model it was exported from)."),
    formats: str = typer.Option(",".join(["pytorch", *FORMATS]), help="Comma-separated formats to try."),
    precisions: str = typer.Option(",".join(PRECISIONS), help="Comma-separated precisions to try (where a "
                                   "format has them)."),
    batch: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    data: Path = typer.Option(None, help="Labelled data to score every variant on (a class folder of videos, or a "
                              "speech CSV); also calibrates video int8."),
    runs: int = typer.Option(10, min=1, help="Timed calls per variant and batch (after 2 warm-up calls)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    plot: Path = typer.Option(None, help="Write a bar chart of the speed-ups to this PNG."),
    record: bool = typer.Option(False, help="MODEL is an artifact: record the fastest runtime that passed parity "
                                "(batch 1) in its tiffin.json; predict, serve and the bento then use it."),
    trust: list[Path] = TRUST,
) -> None:
    """Export to every format x precision, check parity, and time each on every runtime installed,
    against PyTorch eager fp32."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from tiffin.cpu import cpu_features
    from tiffin.export.benchmark import BenchOptions, benchmark, parse_batches, parse_targets, variant
    from tiffin.export.benchmark import plot as draw
    from tiffin.export.benchmark import record_fastest

    if record and not (model / "tiffin.json").is_file():
        raise typer.BadParameter(f"{model} is not an artifact folder; --record writes into an artifact's tiffin.json",
                                 param_hint="--record")
    from tiffin.trust import named

    opts = BenchOptions(model, parse_targets(formats, precisions), parse_batches(batch), data, runs,
                        trust=named(model, trust))
    with Progress(console=Console(stderr=True), transient=True) as bar:
        step = bar.add_task("benchmark")
        rows = benchmark(opts, lambda done, total, label: bar.update(step, completed=done, total=total,
                                                                     description=label))
    if plot is not None:
        draw(rows, plot)
    if record:
        typer.echo(f"recorded runtime {record_fastest(model, rows)} in {model / 'tiffin.json'}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{model}: speed-up over PyTorch eager fp32 (median of {runs} warm calls)")
    for column in ("format", "runtime", "precision", "batch", "status", "size MB", "latency ms", "p90 ms", "items/s", "speed-up",
                   "GFLOP/s", "% of peak", "metric"):
        table.add_column(column, justify="right" if column not in ("format", "runtime", "precision", "status", "metric")
                         else "left")
    for r in rows:
        fmt = lambda v, f="{}": "" if v is None else f.format(v)  # noqa: E731
        metric = ", ".join(f"{k} {v}" for k, v in (r.get("metric") or {}).items())
        table.add_row(r["format"], r.get("runtime") or "", r["precision"], str(r["batch"]), r["status"], fmt(r["size_mb"]),
                      fmt(r.get("latency_ms")), fmt(r.get("p90_ms")), fmt(r.get("items_per_s")),
                      fmt(r.get("speedup"), "{:.2f}x"), fmt(r.get("gflops_per_s")),
                      fmt(r.get("peak_fraction") and 100 * r["peak_fraction"], "{:.0f}%"), metric)
    console = Console(width=None if Console().is_terminal else 180)
    console.print(table)
    for r in rows:
        if r["note"] and r["batch"] == rows[0]["batch"]:
            # as written: rich markup would eat "[gpu]" in "pip install 'tiffin[gpu]'"
            console.print(f"{variant(r)}: {r['status']}: {r['note']}", soft_wrap=True, markup=False, highlight=False)
    peak = rows[0]["machine_peak_gflops"] if rows else {}
    bf16 = f"{peak['bf16']} GFLOP/s bf16" if "bf16" in peak else "bf16 not measured (no bf16 rows, or no bf16 instructions)"
    typer.echo(f"machine matmul peak: {peak.get('fp32')} GFLOP/s fp32, {bf16}; CPU: {cpu_features()}")

