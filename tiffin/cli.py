"""The `tiffin` command: a root typer app that wires one sub-app per stage.

Each stage defines its own app; this module only adds them and the commands that span
stages (`predict`). Stages are imported lazily inside commands so `tiffin --help` is fast.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from tiffin.ctc_beam import DECODERS
from tiffin.errors import reported
from tiffin.export.cli import TRUST, benchmark_command, check_command, export_command
from tiffin.runtimes import runtime_help
from tiffin.serve.cli import build_command, serve_command
from tiffin.trust_cli import trust_app
from tiffin.train.cli import LIMIT, backbones_app, download_command, pretrain_app, synth_app, train_app

# speech decoding options, shared by predict and evaluate (choices from tiffin.ctc_beam's table)
Decoder = Enum("Decoder", {name: name for name in DECODERS}, type=str)
DECODER = typer.Option(Decoder["auto"], help="Speech: greedy CTC, or beam search over --words (and --lm); auto: "
                       "the artifact's own word list / LM when it was exported with them, else greedy.")
WORDS = typer.Option(None, help="Speech, beam: a word list, one word a line; transcripts are made of its words.")
LM = typer.Option(None, help="Speech, beam: a KenLM n-gram model (ARPA or binary); with an ARPA model and no "
                  "--words, its unigrams are the word list.")
BEAM_WIDTH = typer.Option(50, min=1, help="Speech, beam: hypotheses kept per frame.")
LM_WEIGHT = typer.Option(2.0, help="Speech, beam: weight of the LM's log-probability.")
WORD_SCORE = typer.Option(0.0, help="Speech, beam: score added per word (positive: more, shorter words).")
HOTWORD = typer.Option(None, "--hotword", help="Speech, beam: a word to favour (repeat for more; added to the "
                       "word list when missing).")
HOTWORD_WEIGHT = typer.Option(5.0, help="Speech, beam: score added each time a --hotword is chosen.")


RUNTIME = typer.Option(None, help=f"Artifacts: the runtime to run on ({runtime_help()}; see tiffin.runtimes) "
                       "[default: the one tiffin.json records, else the format's first].")


def decoding_options(decoder: Enum, words: Path | None, lm: Path | None, beam_width: int, lm_weight: float,
                     word_score: float, hotwords: list[str] | None = None, hotword_weight: float = 5.0
                     ) -> dict[str, Any]:
    """The decoder options as the Python API's predict/evaluate take them (tiffin.ctc_beam.decoder_choice's
    arguments), checked now: a bad combination is refused before any model is opened."""
    from tiffin.ctc_beam import decoder_choice

    options = {"decoder": decoder.value, "words": words, "lm": lm, "beam_width": beam_width, "lm_weight": lm_weight,
               "word_score": word_score, "hotwords": tuple(hotwords or ()), "hotword_weight": hotword_weight}
    decoder_choice(**options)
    return options


app = typer.Typer(
    name="tiffin",
    help="Fine-tune video and speech models, export them with a parity check, serve them with BentoML.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(train_app, name="train")
app.add_typer(backbones_app, name="backbones")
app.add_typer(synth_app, name="synth")
app.add_typer(pretrain_app, name="pretrain")
app.command("download")(download_command)
app.command("export")(export_command)
app.command("check")(check_command)
app.command("benchmark")(benchmark_command)
app.command("serve")(serve_command)
app.command("build")(build_command)
app.add_typer(trust_app, name="trust")


@app.command()
@reported
def predict(
    model: Path = typer.Argument(..., help="A .ckpt written by `tiffin train`, an artifact folder written by "
                                 "`tiffin export`, a Hugging Face model (an id, downloaded if missing, or a "
                                 "save_pretrained folder: a CTC speech model, or a video classifier predicting its own "
                                 "labels), or an embedded model (tiffin/tiny-motion, tiffin/tiny-en: zero-shot)."),
    files: list[Path] = typer.Argument(..., help="Video or audio files."),
    top_k: int = typer.Option(5, min=1, help="Video: labels to show per file."),
    clips: int = typer.Option(1, min=1, help="Video: clips spread over each video, scores averaged."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    decoder: Decoder = DECODER, words: Path = WORDS, lm: Path = LM, beam_width: int = BEAM_WIDTH,
    lm_weight: float = LM_WEIGHT, word_score: float = WORD_SCORE, hotword: list[str] = HOTWORD,
    hotword_weight: float = HOTWORD_WEIGHT,
    timestamps: bool = typer.Option(False, help="Speech: each word's start and end in seconds, greedy decoding "
                                    "also its confidence (--json)."),
    keep_silence: bool = typer.Option(False, help="Speech: send silent windows to the model too (by default a "
                                      "window quieter than $TIFFIN_SILENCE_DBFS, -60 dBFS, is skipped as blank)."),
    start: float = typer.Option(0.0, min=0.0, help="Seconds: predict from this point of each file on."),
    end: float = typer.Option(None, min=0.0, help="Seconds: predict up to this point of each file."),
    runtime: str = RUNTIME, limit: list[str] = LIMIT, trust: list[Path] = TRUST,
) -> None:
    """Top-k labels per video, or a transcript per recording; exit status 1 if any file could not be read."""
    if end is not None and end <= start:
        raise typer.BadParameter(f"--end {end:g} is not after --start {start:g}", param_hint="--end")
    from tiffin.limits import raise_limits

    raise_limits(limit or [])
    from tiffin.api import _predict, open_predictor
    from tiffin.trust import named

    decoding = decoding_options(decoder, words, lm, beam_width, lm_weight, word_score, hotword, hotword_weight)
    # the Python API's own path: what Artifact.predict and model.predict run
    predictor = open_predictor(model, runtime, named(model, trust), option=f"--runtime {runtime}")
    results = _predict(predictor, files, top_k, clips, timestamps,
                       {**decoding, "start": start, "end": end, "keep_silence": keep_silence})
    if as_json:
        typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: error: {r['error']}", err=True)
            elif "text" in r:
                typer.echo(f"{r['file']}: {r['text']}")
            else:
                best = ", ".join(f"{x['label']} {x['score']:.3f}" for x in r["labels"])
                typer.echo(f"{r['file']}: {best}")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command()
@reported
def evaluate(
    model: Path = typer.Argument(..., help="Anything `tiffin predict` takes: checkpoint, artifact, Hugging Face "
                                 "folder, embedded model name."),
    data: Path = typer.Argument(..., help="Speech: a CSV/TSV or JSON lines of audio files and transcripts, or a "
                                "speech folder in a layout `tiffin train` reads (its test split when it has one); "
                                "video: a class folder DATA/<label>/<video>."),
    audio_column: str = typer.Option("speech_files", help="Speech: column of audio files."),
    text_column: str = typer.Option("targets", help="Speech: column of transcripts."),
    clips: int = typer.Option(1, min=1, help="Video: clips spread over each video, scores averaged."),
    decoder: Decoder = DECODER, words: Path = WORDS, lm: Path = LM, beam_width: int = BEAM_WIDTH,
    lm_weight: float = LM_WEIGHT, word_score: float = WORD_SCORE, hotword: list[str] = HOTWORD,
    hotword_weight: float = HOTWORD_WEIGHT, runtime: str = RUNTIME,
    tune: bool = typer.Option(False, help="Speech, beam: search --lm-weight and --word-score for the lowest WER on "
                              "DATA (a dev set, not the test set); prints the grid and the settings to export with."),
    limit: list[str] = LIMIT, trust: list[Path] = TRUST,
) -> None:
    """Score a model on labelled data: CER/WER (speech) or top-1 accuracy (video), as JSON."""
    from tiffin.limits import raise_limits

    raise_limits(limit or [])
    from tiffin.api import _evaluate, open_predictor
    from tiffin.trust import named

    decoding = decoding_options(decoder, words, lm, beam_width, lm_weight, word_score, hotword, hotword_weight)
    # the Python API's own path: what Artifact.evaluate and model.evaluate run
    predictor = open_predictor(model, runtime, named(model, trust), option=f"--runtime {runtime}")
    scores = _evaluate(predictor, data, audio_column, text_column, clips, decoding, tune, name=str(model))
    typer.echo(json.dumps(scores))
    if tune:
        best = scores["tuned"]
        typer.echo(f"lowest WER {scores['wer']} (given settings: {scores['given']['wer']}) with --lm-weight "
                   f"{best['lm_weight']:g} --word-score {best['word_score']:g}", err=True)


@app.command("lm")
@reported
def lm_command(
    text: Path = typer.Argument(..., help="A UTF-8 text file, one sentence a line (held-out text, not the test's)."),
    out: Path = typer.Option(..., help="Folder for words.txt and lm.arpa."),
    order: int = typer.Option(3, min=1, max=6, help="n-gram order."),
    min_count: int = typer.Option(1, min=1, help="Words seen fewer times are left out of words.txt."),
    case: str = typer.Option("upper", help="upper (wav2vec2-base-960h, tiny-en) or lower (a from-data vocabulary)."),
) -> None:
    """Make a word list and an n-gram LM (ARPA, interpolated absolute discounting) from a text file."""
    from tiffin.ngram import build

    made = build(text, out, order, min_count, case)
    typer.echo(f"{made['words']}: {made['vocabulary']} words; {made['lm']}: {made['order']}-gram LM of "
               f"{made['sentences']} sentences\nuse: --decoder beam --words {made['words']} --lm {made['lm']}")


@app.command("stream")
@reported
def stream_command(
    url: str = typer.Argument(..., help="A speech server: ws://HOST:PORT or http://HOST:PORT (`tiffin serve "
                              "SPEECH_ARTIFACT`), or its /transcribe/stream URL."),
    file: Path = typer.Argument(..., help="A recording (anything `tiffin predict` reads), sent as a live source."),
    realtime: bool = typer.Option(False, "--realtime", help="Send at the pace of the recording, as a microphone "
                                  "would (else as fast as the server answers)."),
    as_json: bool = typer.Option(False, "--json", help="Print the server's answers, one JSON object a line."),
) -> None:
    """Transcribe a recording live over the speech server's WebSocket: partial and final lines, then the text."""
    import sys

    from tiffin.errors import MediaError
    from tiffin.live_client import StreamError, final_text, stream_file

    shown = _LiveLines(sys.stdout.isatty() and not as_json)
    answers = []
    try:
        for answer in stream_file(url, file, realtime=realtime):
            answers.append(answer)
            if as_json:
                typer.echo(json.dumps(answer, ensure_ascii=False))
            else:
                shown(answer)
    except (StreamError, MediaError) as err:
        shown.clear()
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if not as_json:
        shown.clear()
        typer.echo(f"text: {final_text(answers)}")


class _LiveLines:
    """`tiffin stream`'s lines: on a terminal the partial result rewrites one line, and each final
    result replaces it; elsewhere (a pipe, a file) every changed partial is a line of its own."""

    def __init__(self, terminal: bool):
        self.terminal, self.partial = terminal, ""

    def __call__(self, answer: dict[str, Any]) -> None:
        if "partial" in answer:
            if answer["partial"] != self.partial:
                self.partial = answer["partial"]
                if self.terminal:
                    import shutil

                    width = shutil.get_terminal_size().columns - 1
                    typer.echo("\r\033[K" + self.partial[-width:], nl=False)
                else:
                    typer.echo(f"partial: {self.partial}")
        elif answer.get("text"):
            self.clear()
            typer.echo(f"final: {answer['text']}")

    def clear(self) -> None:
        if self.terminal and self.partial:
            typer.echo("\r\033[K", nl=False)
        self.partial = ""


def main() -> None:
    """Console-script entry point."""
    app()
