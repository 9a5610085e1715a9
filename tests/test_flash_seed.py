"""Lines of Lightning Flash's video and speech chapters, run as a Flash user writes them (issue 28's
seed lines): backbone details, Lightning 1's `gpus=` and `precision=16`, a single predict file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiffin.errors import TiffinError


def test_get_backbone_details_gives_the_table_row_and_its_preprocessing():
    from tiffin.train.backbones import VIDEO_BACKBONES
    from tiffin.video import VideoClassifier

    details = VideoClassifier.get_backbone_details("slowfast_r50")
    row = VIDEO_BACKBONES["slowfast_r50"]
    assert (details["family"], details["params"], details["frames"], details["sampling_rate"], details["crop"],
            details["gflops_per_view"], details["kinetics400_top1"]) == (
        "slowfast", row.params, row.frames, row.sampling_rate, row.crop, row.gflops, row.top1)
    assert details["weights_url"].endswith(row.weights_file) and details["preprocessing"]["slowfast_alpha"] == 4
    assert details["preprocessing"]["mean"] == [0.45] * 3
    with pytest.raises(TiffinError, match="not a video backbone"):
        VideoClassifier.get_backbone_details("slowfast_r5O")


@pytest.mark.parametrize("gpus", [0, -1, 2])
def test_lightning1_gpus_and_precision_16_run_here_with_a_note(gpus, capsys):
    from tiffin import Trainer

    trainer = Trainer(max_epochs=1, gpus=gpus, precision=16, logger=False, enable_checkpointing=False)
    out = capsys.readouterr()
    text = out.out + out.err
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"  # no GPU on this machine
    assert trainer.precision == "bf16-mixed"  # 16 -> "16-mixed", which a CPU runs as bf16
    assert f"gpus={gpus!r} is Lightning 1's spelling" in text and "'16-mixed'" in text
    assert ("no GPU here" in text) == (gpus != 0)


def test_a_single_predict_file_is_one_file_and_an_unreadable_one_is_named(recordings, tmp_path):
    from tiffin import Trainer
    from tiffin.speech import SpeechRecognition, SpeechRecognitionData

    data = SpeechRecognitionData.from_files(predict_files=str(recordings[0]), batch_size=10)
    assert data.predict_files == [Path(recordings[0])]
    model = SpeechRecognition(backbone="tiffin/tiny-en")
    trainer = Trainer(logger=False, enable_checkpointing=False)
    [text] = trainer.predict(model, datamodule=data)
    assert isinstance(text, str) and text
    missing = tmp_path / "scf_02484_01925002707.wav"
    bad = SpeechRecognitionData.from_files(predict_files=[recordings[0], missing], batch_size=10)
    with pytest.raises(TiffinError, match="scf_02484_01925002707.wav: no such file"):
        trainer.predict(model, datamodule=bad)
    answers = trainer.predict(model, datamodule=bad, skip_bad_files=True)
    assert answers[0] == text and answers[1] == {"file": str(missing), "error": "no such file"}
