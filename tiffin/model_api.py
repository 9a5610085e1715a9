"""What tiffin's LightningModules (tiffin.video.VideoClassifier, tiffin.speech.SpeechRecognition)
add to training: `predict`, `evaluate`, `export`, `serve`, as the mixin `ModelAPI`.

Like tiffin.api, it wires the stages (export, serve, train's evaluation), each imported inside the
method that uses it: train/ never imports export/ or serve/, so it cannot live there. It builds on
tiffin.api (`Artifact`, the prediction and settings helpers), never the reverse: tiffin.api names
the task classes through the task table (`model_class`), so neither imports the other back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from tiffin.api import Artifact, _evaluate, _predict, _settings


class ModelAPI:
    """What tiffin's LightningModules add to training: `predict`, `export`, `serve`.

    The class using it provides `loaded()` (a tiffin.train.predict LoadedModel over its network,
    in eval mode) and `source` (the checkpoint or name it was loaded from, or None).
    """

    source: str | Path | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = None, **kwargs: Any):
        """A checkpoint written by `Trainer.save_checkpoint` or `tiffin train` (Lightning's loader),
        remembered as the model's source (what `export` records in tiffin.json)."""
        model = super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        model.source = Path(checkpoint_path)
        return model

    def predictor(self):
        """The host predictor over this model in PyTorch: the path `tiffin predict` takes."""
        return self.loaded().predictor()

    def predict(self, files: Sequence[str | Path], top_k: int = 5, clips: int = 1, timestamps: bool = False,
                **decoding: Any) -> list[dict[str, Any]]:
        """What `tiffin predict CHECKPOINT FILES --json` prints (see `Artifact.predict`; speech decodes
        greedily unless `decoder="beam"` with `words=`/`lm=`)."""
        was_training = self.training
        try:
            return _predict(self.predictor(), files, top_k, clips, timestamps, decoding)
        finally:
            self.train(was_training)

    def evaluate(self, data: str | Path, audio_column: str = "speech_files", text_column: str = "targets",
                 clips: int = 1, tune: bool = False, **decoding: Any) -> dict[str, Any]:
        """What `tiffin evaluate CHECKPOINT DATA` prints: CER/WER on a speech CSV, accuracy on a class
        folder; with `tune` (and `decoder="beam"`), the decoder settings with the lowest WER on DATA."""
        was_training = self.training
        try:
            return _evaluate(self.predictor(), data, audio_column, text_column, clips, decoding, tune)
        finally:
            self.train(was_training)

    def export(self, format: str = "onnx", precision: str = "fp32", out: str | Path | None = None, *,
               force: bool = False, check_data: str | Path | None = None, calibration_data: str | Path | None = None,
               batch: int | None = None, opset: int | None = None, words: str | Path | None = None,
               lm: str | Path | None = None, beam_width: int = 50, lm_weight: float = 2.0, word_score: float = 0.0,
               hotwords: Sequence[str] = (), hotword_weight: float = 5.0,
               tune_on: str | Path | None = None) -> Artifact:
        """Export behind the parity gate (`tiffin export`): the artifact, or nothing written.

        `out` defaults to runs/BACKBONE/export/FORMAT-PRECISION. `words`/`lm`: a word list and
        KenLM model a speech artifact decodes with, with the beam's settings (`tiffin export`'s
        options); `tune_on`: a dev set on which lm_weight / word_score are chosen first.

        Example:
            >>> artifact = model.export(format="onnx", precision="fp32", out="exports/video")

        Raises:
            ParityError: the exported model does not match this one (its type says how:
                ShapeMismatch, ToleranceExceeded, AgreementTooLow).
            TiffinError: bad options.
        """
        from tiffin.errors import TiffinError
        from tiffin.export.exporting import ExportOptions, export_model

        beam = None
        if words is not None or lm is not None:
            from tiffin.ctc_beam import BeamOptions

            beam = BeamOptions(Path(words) if words else None, Path(lm) if lm else None, beam_width, lm_weight,
                               word_score, hotwords=tuple(hotwords), hotword_weight=hotword_weight)
        elif hotwords or tune_on is not None:
            raise TiffinError("export: hotwords= and tune_on= need words= (and lm=): they set the beam decoder")
        if out is None:
            out = Path("runs") / Path(str(self.hparams.backbone)).name / "export" / f"{format}-{precision}"
        was_training = self.training
        try:
            if tune_on is not None:
                from tiffin.train.evaluate import tuned_beam

                beam = tuned_beam(self.predictor(), Path(tune_on), beam)[0]
            path, _ = export_model(ExportOptions(
                self.source, format, precision, opset, Path(out), Path(check_data) if check_data else None,
                Path(calibration_data) if calibration_data else None, force, batch, beam), loaded=self.loaded())
        finally:
            self.train(was_training)
        return Artifact(path, model=self)

    def serve(self, port: int = 3000, host: str = "127.0.0.1", workers: int = 1, **settings: Any):
        """Export to ONNX fp32 (behind the parity gate) in a temporary folder and serve that, torch-free,
        as a child process; the folder goes when the server is stopped.

        Example:
            >>> with model.serve(port=0) as server:
            ...     requests.post(server.url + "/classify", files={"file": open("a.mp4", "rb")})
        """
        from tiffin.serve.server import start

        folder = Path(tempfile.mkdtemp(prefix="tiffin-serve-model-"))
        try:  # a refused export or a Ctrl-C while it runs leaves no folder behind either
            artifact = self.export("onnx", "fp32", folder / "artifact")
            return start(artifact.path, host, port, workers, _settings(settings), cleanup=[folder])
        except BaseException:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise
