"""Open models through the one path: weights fetched where they are published (a loopback zoo
mirror and a loopback Hub stand in for the internet), Hugging Face video classifiers and
torchvision's video zoo trained, exported behind the gate and predicted like tiffin's own.

`make test` runs one model of each video front-end kind (a 3-D CNN from the zoo mirror, a
video transformer from the Hub); `make test-families` runs every family (tiny random configs
written here) and torchvision's rows through train -> export -> predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import predict_json, service, tiffin
from tests.loopback_weights import LoopbackHub, ZooMirror, offline_by_construction  # noqa: F401 (autouse)
from tiffin.spec import VideoSpec
from tiffin.train.backbones import HF_VIDEO_FAMILIES, VIDEO_BACKBONES

KINETICS_LIKE = {0: "abseiling", 1: "juggling", 2: "yawning"}
SMALL = ("--num-workers", "0", "--no-progress", "--max-steps", "2")


def tiny_video_config(kind: str):
    """A tiny random config of a transformers video family: 4 frames of 32 pixels, one layer."""
    import transformers

    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, id2label=KINETICS_LIKE,
                  label2id={v: k for k, v in KINETICS_LIKE.items()})
    return {
        "videomae": lambda: transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2,
                                                        intermediate_size=64, **common),
        "timesformer": lambda: transformers.TimesformerConfig(image_size=32, patch_size=16, num_frames=4,
                                                              intermediate_size=64, **common),
        "vivit": lambda: transformers.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 16, 16],
                                                  intermediate_size=64, **common),
        "vjepa2": lambda: transformers.VJEPA2Config(crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2,
                                                    mlp_ratio=2.0, num_pooler_layers=1, pred_hidden_size=32,
                                                    pred_num_attention_heads=2, pred_num_hidden_layers=1, **common),
        "videoprism_vision_model": lambda: transformers.VideoPrismVisionConfig(
            image_size=32, num_frames=4, tubelet_size=[1, 16, 16], intermediate_size=64, num_spatial_layers=1,
            num_temporal_layers=1, num_auxiliary_layers=0,
            **{k: v for k, v in common.items() if k != "num_hidden_layers"}),
    }[kind]()


def write_hf_video_model(folder: Path, kind: str, side: int = 36) -> Path:
    """save_pretrained of a tiny random video classifier of `kind` and its video processor."""
    import transformers

    torch.manual_seed(0)
    transformers.AutoModelForVideoClassification.from_config(tiny_video_config(kind)).save_pretrained(folder)
    processor = getattr(transformers, HF_VIDEO_FAMILIES[kind].processor)
    kwargs = {"crop_size": 32} if kind == "vjepa2" else {"size": {"shortest_edge": side},
                                                          "crop_size": {"height": 32, "width": 32}}
    processor(**kwargs).save_pretrained(folder)
    return folder


def zoo_bytes(name: str) -> bytes:
    """A zoo-format weights file (`model_state`, as PyTorchVideo publishes) of a table row."""
    import io

    from tiffin.train.video_model import build_backbone

    info = VIDEO_BACKBONES[name]
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({"model_state": build_backbone(info, info.frames, info.crop).state_dict()}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip(motion_dataset) -> Path:
    return sorted(motion_dataset.rglob("*.mp4"))[0]


# --- the zoo: weights on first use, the cache afterwards ---------------------------------------


def test_zoo_backbone_downloads_on_first_use_trains_then_comes_from_the_cache(motion_dataset, tmp_path, monkeypatch):
    path = "/pytorchvideo/model_zoo/kinetics/X3D_XS.pyth"  # the publisher's path, kept by the mirror
    train = ("train", "video", "--train-folder", motion_dataset, "--backbone", "x3d_xs", "--num-frames", "4",
             "--crop-size", "32", "--clip-duration", "0.8", *SMALL)
    with ZooMirror({path: zoo_bytes("x3d_xs")}) as mirror:
        monkeypatch.setenv("TIFFIN_WEIGHTS_MIRROR", mirror.url)
        first = tiffin(*train, "--out", tmp_path / "first")
        assert first.exit_code == 0, first.output
        assert mirror.requests[path] == 1
    again = tiffin("download", "x3d_xs")  # the mirror is gone: the cache serves, no request
    assert again.exit_code == 0 and "X3D_XS.pyth" in again.output, again.output
    rows = {r["name"]: r for r in json.loads(tiffin("backbones", "video", "--json").stdout)}
    assert rows["x3d_xs"]["weights_path"] == str(tmp_path / "torch" / "hub" / "checkpoints" / "X3D_XS.pyth")
    assert rows["x3d_xs"]["weights_present"] and not rows["slowfast_r50"]["weights_present"]


# --- Hugging Face video classifiers -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HF_VIDEO_FAMILIES))
def test_hf_preprocessing_is_the_models_own_processor(kind, tmp_path):
    """tiffin's in-graph normalisation and axis order equal the family's own video processor
    (resize and crop are the host's, so frames arrive at the crop size)."""
    import transformers

    from tiffin.train.video_model import Preprocess, make_spec

    folder = write_hf_video_model(tmp_path / kind, kind)
    spec = make_spec(str(folder), list(KINETICS_LIKE.values()))
    assert (spec.num_frames, spec.crop_size, spec.layout) == (4, 32, "BTCHW")
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    processor = getattr(transformers, HF_VIDEO_FAMILIES[kind].processor).from_pretrained(folder)
    theirs = processor([list(frames)], do_resize=False, do_center_crop=False, return_tensors="pt")
    theirs = next(iter(theirs.values()))
    ours = Preprocess(spec)(torch.from_numpy(frames)[None])
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)


def test_a_processor_that_does_not_normalise_is_followed(tmp_path):
    """VideoPrism's checkpoints take 0..1 pixels (`do_normalize: false`): no mean/std in the graph."""
    import transformers

    from tiffin.train.video_model import Preprocess, make_spec

    kind = "videoprism_vision_model"
    folder = write_hf_video_model(tmp_path / kind, kind)
    config = next(folder.glob("*processor*.json"))
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_normalize": False}))
    spec = make_spec(str(folder), list(KINETICS_LIKE.values()))
    assert (spec.mean, spec.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    processor = transformers.LlavaOnevisionVideoProcessor.from_pretrained(folder)
    theirs = next(iter(processor([list(frames)], do_resize=False, return_tensors="pt").values()))
    torch.testing.assert_close(Preprocess(spec)(torch.from_numpy(frames)[None]), theirs.float(), atol=1e-6, rtol=0)


def test_hub_video_classifier_predicts_its_labels_then_fine_tunes_exports_and_serves_alike(
        motion_dataset, clip, tmp_path, monkeypatch):
    folder = write_hf_video_model(tmp_path / "tiny-videomae", "videomae")
    (folder / "pytorch_model.bin").write_bytes(b"a pickle tiffin never fetches")
    with LoopbackHub() as hub:
        hub.add("org/tiny-videomae", {"main": folder})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        zero_shot = predict_json("org/tiny-videomae", [clip])[0]["labels"]
        assert {r["label"] for r in zero_shot} == set(KINETICS_LIKE.values())  # its own head, no fine-tuning
        assert not any(p.endswith(".bin") for p in hub.requests)
        run = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", "org/tiny-videomae", *SMALL,
                     "--out", tmp_path / "run")
        assert run.exit_code == 0, run.output
    again = predict_json("org/tiny-videomae", [clip])[0]["labels"]  # the Hub is gone: the cache serves
    assert again == zero_shot
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    exported = tiffin("export", checkpoint, "--format", "onnx", "--out", tmp_path / "onnx")
    assert exported.exit_code == 0 and "parity ok" in exported.output, exported.output
    labels = sorted(p.name for p in motion_dataset.iterdir())
    from_ckpt = predict_json(checkpoint, [clip])[0]["labels"]
    from_onnx = predict_json(tmp_path / "onnx", [clip])[0]["labels"]
    from_hf = predict_json(tmp_path / "run" / "hf", [clip])[0]["labels"]  # the run's save_pretrained output
    assert sorted(r["label"] for r in from_ckpt) == labels
    for other in (from_onnx, from_hf):
        assert [r["label"] for r in other] == [r["label"] for r in from_ckpt]
        np.testing.assert_allclose([r["score"] for r in other], [r["score"] for r in from_ckpt], atol=1e-4)
    meta = json.loads((tmp_path / "onnx" / "tiffin.json").read_text())
    assert meta["preprocessing"]["layout"] == "BTCHW"
    served = service(monkeypatch, "video", tmp_path / "onnx").classify(clip, top_k=len(labels))  # what BentoML runs
    assert served["labels"] == from_onnx and served["backbone"] == "org/tiny-videomae"


def test_a_head_without_named_classes_asks_for_fine_tuning(clip, tmp_path):
    import transformers

    config = tiny_video_config("videomae")
    config.id2label, config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    transformers.VideoMAEForVideoClassification(config).save_pretrained(tmp_path / "m")
    result = tiffin("predict", tmp_path / "m", clip)
    assert result.exit_code == 2 and "fine-tune it on your labels first" in result.output


def test_a_speech_model_is_not_a_video_backbone(motion_dataset, tmp_path):
    import transformers

    transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64).save_pretrained(tmp_path / "w2v")
    result = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", tmp_path / "w2v", *SMALL,
                    "--out", tmp_path / "run")
    assert result.exit_code == 2 and "'wav2vec2' is not a video classifier" in result.output
    assert "videomae" in result.output and len(result.output.strip().splitlines()) == 1


# --- every family: `make test-families` -------------------------------------------------------

FAMILY_CASES = [*(f"hf:{kind}" for kind in sorted(HF_VIDEO_FAMILIES)),
                *(f"tv:{name}" for name, row in VIDEO_BACKBONES.items()
                  if row.family == "torchvision" and not row.fixed_size)]


@pytest.mark.families
@pytest.mark.parametrize("case", FAMILY_CASES)
def test_every_video_family_fine_tunes_exports_and_predicts_alike(case, motion_dataset, clip, tmp_path, monkeypatch):
    kind, name = case.split(":")
    if kind == "hf":
        backbone, size = str(write_hf_video_model(tmp_path / name, name)), ()
    else:
        import dataclasses
        import hashlib

        # torchvision's file names carry their sha256 prefix, checked on download: the row is
        # pointed at a name carrying these bytes' hash (a wrong one is refused: test_weights.py)
        payload = zoo_bytes(name)
        info = dataclasses.replace(VIDEO_BACKBONES[name],
                                   weights_file=f"{name}-{hashlib.sha256(payload).hexdigest()[:8]}.pth")
        monkeypatch.setitem(VIDEO_BACKBONES, name, info)
        path = "/models/" + info.weights_file
        mirror = ZooMirror({path: payload})
        monkeypatch.setenv("TIFFIN_WEIGHTS_MIRROR", mirror.url)
        backbone, size = name, ("--num-frames", str(max(4, info.frame_multiple)), "--crop-size", "32")
    run = tiffin("train", "video", "--train-folder", motion_dataset, "--backbone", backbone, *size, *SMALL,
                 "--out", tmp_path / "run")
    if kind == "tv":
        mirror.stop()
    assert run.exit_code == 0, run.output
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    exported = tiffin("export", checkpoint, "--format", "onnx", "--out", tmp_path / "onnx")
    assert exported.exit_code == 0 and "parity ok" in exported.output, exported.output
    from_ckpt = predict_json(checkpoint, [clip])[0]["labels"]
    from_onnx = predict_json(tmp_path / "onnx", [clip])[0]["labels"]
    assert [r["label"] for r in from_onnx] == [r["label"] for r in from_ckpt]
    np.testing.assert_allclose([r["score"] for r in from_onnx], [r["score"] for r in from_ckpt], atol=1e-4)


def test_spec_layout_round_trips():
    spec = VideoSpec(num_frames=4, clip_duration=1.0, side_size=36, crop_size=32, labels=("a", "b"), layout="BTCHW")
    assert VideoSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert VideoSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "layout"}).layout == "BCTHW"


# --- speech from the Hub ----------------------------------------------------------------------


def test_hub_speech_model_downloads_trains_and_predicts_from_the_cache_offline(checkpoints, tmp_path, monkeypatch):
    """The seed's `--backbone facebook/wav2vec2-base-960h` path with another family (HuBERT): the Hub
    id is fetched on first use, `tiffin download` pre-fetches, and with the Hub gone the cache serves."""
    from tests.test_ctc_families import save_tiny

    folder = save_tiny("hubert", tmp_path / "tiny-hubert")
    rows = sorted(checkpoints["clips"].iterdir())
    (tmp_path / "train.csv").write_text("speech_files,targets\n" + "\n".join(
        f"{p},{p.stem.replace('_', ' ').upper()}" for p in rows))
    train = ("train", "speech", "--train-csv", tmp_path / "train.csv", "--backbone", "org/tiny-hubert", *SMALL)
    with LoopbackHub() as hub:
        hub.add("org/tiny-hubert", {"main": folder})
        hub.add("org/other", {"main": folder})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        first = tiffin(*train, "--out", tmp_path / "first")
        assert first.exit_code == 0, first.output
        fetched = tiffin("download", "org/other")
        assert fetched.exit_code == 0 and "models--org--other" in fetched.output, fetched.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline now: the cache, or one line naming it
    local = predict_json(folder, rows[:1])[0]["text"]
    assert predict_json("org/tiny-hubert", rows[:1])[0]["text"] == local  # what training fetched
    assert predict_json("org/other", rows[:1])[0]["text"] == local  # what `tiffin download` fetched
    missing = tiffin("predict", "org/never-fetched", rows[0])
    assert missing.exit_code == 2 and "tiffin download org/never-fetched" in missing.output
    assert "models--org--never-fetched" in missing.output and len(missing.output.strip().splitlines()) == 1
