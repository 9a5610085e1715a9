"""train.backbones + train.video_model: every table row builds, runs small, loads zoo weights."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tiffin.cli import app
from tiffin.errors import TiffinError
from tiffin.spec import VideoSpec
from tiffin.train.backbones import VIDEO_BACKBONES
from tiffin.train.video_lookup import get_video_backbone
from tiffin.train.video_model import Preprocess, build_backbone, build_video_net, load_pretrained

LABELS = ("a", "b", "c")


def small_spec(name: str, frames: int | None = None, crop: int = 64) -> VideoSpec:
    info = VIDEO_BACKBONES[name]
    if info.fixed_size:  # runs at its zoo size only
        frames, crop = info.frames, info.crop
    return VideoSpec(num_frames=frames or max(4, info.frame_multiple), clip_duration=1.0, side_size=crop,
                     crop_size=crop, mean=info.mean, std=info.std, slowfast_alpha=info.slowfast_alpha, labels=LABELS)


# fixed-size rows run at their full zoo size: with the full matrix, `make test-families`
ROWS = [pytest.param(name, marks=pytest.mark.families) if info.fixed_size else name
        for name, info in VIDEO_BACKBONES.items()]


@pytest.mark.parametrize("name", ROWS)
def test_every_backbone_runs_at_a_small_size(name):
    spec = small_spec(name)
    net = build_video_net(name, spec).eval()
    frames = torch.randint(0, 256, (2, spec.num_frames, spec.crop_size, spec.crop_size, 3), dtype=torch.uint8)
    with torch.no_grad():
        logits = net(frames)
        again = net(frames)
    assert logits.shape == (2, len(LABELS))
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, again)  # the input list is not consumed by the forward


@pytest.mark.parametrize("name", list(VIDEO_BACKBONES))
def test_table_parameter_counts_match_the_zoo_models(name):
    info = VIDEO_BACKBONES[name]
    model = build_backbone(info, info.frames, info.crop)
    assert sum(p.numel() for p in model.parameters()) == info.params


def test_slowfast_gets_both_pathways_packed():
    spec = small_spec("slowfast_r50", frames=8)
    net = build_video_net("slowfast_r50", spec).eval()
    seen = []
    net.backbone.blocks[0].register_forward_pre_hook(lambda m, args: seen.append([x.shape for x in args[0]]))
    frames = torch.randint(0, 256, (1, 8, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        net(frames)
    assert seen == [[torch.Size([1, 3, 2, 64, 64]), torch.Size([1, 3, 8, 64, 64])]]
    slow, fast = Preprocess(spec)(frames)
    torch.testing.assert_close(slow, fast[:, :, [0, 7]])  # pytorchvideo PackPathway's linspace frames


def test_preprocess_normalises_like_the_zoo():
    spec = small_spec("x3d_xs")
    frames = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    expected = (frames.permute(0, 4, 1, 2, 3).float() / 255 - 0.45) / 0.225
    torch.testing.assert_close(Preprocess(spec)(frames), expected)


def test_x3d_swish_is_replaced_by_silu_and_head_outputs_logits():
    from pytorchvideo.layers.swish import Swish

    net = build_video_net("x3d_xs", small_spec("x3d_xs"))
    assert not any(isinstance(m, Swish) for m in net.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in net.modules())
    with torch.no_grad():
        out = net.eval()(torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8))
    assert not torch.allclose(out.sum(-1), torch.ones(2))  # no softmax on the output


def _write_zoo_file(path, name, frames, crop):
    info = VIDEO_BACKBONES[name]
    model = build_backbone(info, frames, crop)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": model.state_dict(), "epoch": 196, "cfg": "TRAIN: ..."}, path)
    return model


def test_pretrained_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    zoo = _write_zoo_file(tmp_path / "torch" / "hub" / "checkpoints" / "X3D_XS.pyth", "x3d_xs", 4, 160)
    net = build_video_net("x3d_xs", small_spec("x3d_xs"), pretrained=True)
    mine, theirs = net.backbone.state_dict(), zoo.state_dict()
    for key, value in theirs.items():
        if "proj" not in key:
            torch.testing.assert_close(mine[key], value)
    assert net.head().out_features == len(LABELS)  # the 400-class layer was replaced


def test_missing_weights_offline_say_where_they_go_and_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("TIFFIN_OFFLINE", "1")
    with pytest.raises(TiffinError) as err:
        build_video_net("slowfast_r50", small_spec("slowfast_r50"), pretrained=True)
    message = str(err.value)
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "SLOWFAST_8x8_R50.pyth") in message
    assert "tiffin download slowfast_r50" in message and "--weights" in message and "\n" not in message
    assert not (tmp_path / "empty" / "hub" / "checkpoints").exists() or not any((tmp_path / "empty").rglob("*.pyth"))


def test_wrong_weights_file_is_refused(tmp_path):
    _write_zoo_file(tmp_path / "x3d.pyth", "x3d_xs", 4, 160)
    with pytest.raises(TiffinError, match="does not fit c2d_r50"):
        build_video_net("c2d_r50", small_spec("c2d_r50"), weights=tmp_path / "x3d.pyth")
    (tmp_path / "junk.pyth").write_bytes(b"not a checkpoint")
    with pytest.raises(TiffinError, match="not a loadable weights file"):
        build_video_net("x3d_xs", small_spec("x3d_xs"), weights=tmp_path / "junk.pyth")


def test_weights_with_pickled_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model_state": {}, "payload": Evil()}, tmp_path / "evil.pyth")
    with pytest.raises(TiffinError, match="not a loadable weights file"):
        build_video_net("x3d_xs", small_spec("x3d_xs"), weights=tmp_path / "evil.pyth")


def test_mvit_positional_embeddings_are_resized_for_other_clip_sizes(tmp_path):
    zoo = _write_zoo_file(tmp_path / "mvit.pyth", "mvit_base_16x4", 4, 64)
    info = get_video_backbone("mvit_base_16x4")
    model = build_backbone(info, 8, 96)
    load_pretrained(model, info, tmp_path / "mvit.pyth")
    key = "cls_positional_encoding.pos_embed_spatial"
    assert model.state_dict()[key].shape[1] == (96 // 4) ** 2
    assert zoo.state_dict()[key].shape[1] == (64 // 4) ** 2
    torch.testing.assert_close(model.state_dict()["patch_embed.patch_model.weight"],
                               zoo.state_dict()["patch_embed.patch_model.weight"])


def test_backbones_cli_lists_the_table_as_json():
    result = CliRunner().invoke(app, ["backbones", "video", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    rows = [r for r in listed if r["zoo"] != "transformers"]
    assert [r["name"] for r in rows] == list(VIDEO_BACKBONES)
    required = {"slowfast_r50", "slow_r50", "x3d_xs", "x3d_s", "x3d_m", "r2plus1d_r50", "c2d_r50", "i3d_r50",
                "csn_r101", "mvit_base_16x4", "r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b", "mvit_v2_s",
                "swin3d_t", "swin3d_s", "swin3d_b"}
    assert required <= {r["name"] for r in rows}
    hub = {r["name"]: r for r in listed if r["zoo"] == "transformers"}  # known Hub ids, then any other
    assert {"MCG-NJU/videomae-base-finetuned-kinetics", "facebook/vjepa2-vitl-fpc16-256-ssv2"} <= set(hub)
    assert not any(r["weights_present"] for r in hub.values())  # this test's caches hold none
    for r in rows:
        assert isinstance(r["params"], int) and r["params"] > 1_000_000
        assert r["weights_path"].endswith(VIDEO_BACKBONES[r["name"]].weights_file)


def test_unsupported_clip_sizes_name_the_option():
    with pytest.raises(TiffinError, match="--num-frames 6"):
        build_video_net("slowfast_r50", small_spec("slowfast_r50", frames=6))
    with pytest.raises(TiffinError, match="--crop-size 50"):
        build_video_net("x3d_xs", small_spec("x3d_xs", crop=50))
