"""train/weights.py against loopback servers: zoo files through a TIFFIN_WEIGHTS_MIRROR, Hub models
through HF_ENDPOINT, each into a cache in the test's own folder. Offline by construction: every
endpoint a test does not start is a closed loopback port, huggingface_hub's import-time settings
included, so nothing here can reach the internet."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest

from tests.loopback_weights import LoopbackHub, ZooMirror, closed_port_url, offline_by_construction  # noqa: F401
from tiffin.errors import TiffinError
from tiffin.train import weights
from tiffin.train.backbones import VIDEO_BACKBONES, hf_hub_cache, hub_checkpoint_dir

X3D_PATH = "/pytorchvideo/model_zoo/kinetics/X3D_XS.pyth"  # VIDEO_BACKBONES["x3d_xs"]'s URL path
TOKEN = "hf_loopback_token"




def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def state_dict_bytes(seed: int = 0, zip_format: bool = True) -> bytes:
    """A small zoo-style checkpoint, as PyTorchVideo's .pyth files hold it (torch.save's zip format, or
    the format before torch 1.6 that older zoo files may use)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"model_state": {"conv.weight": torch.arange(256, dtype=torch.float32) + seed}}, buffer,
               _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def cache_listing() -> list[str]:
    folder = hub_checkpoint_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def mirror(monkeypatch):
    with ZooMirror({X3D_PATH: state_dict_bytes()}) as server:
        monkeypatch.setenv(weights.MIRROR_ENV, server.url)
        yield server


# --- zoo files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_zoo_file_downloads_through_the_mirror_then_uses_the_cache(mirror, zip_format):
    mirror.files[X3D_PATH] = state_dict_bytes(zip_format=zip_format)
    url = VIDEO_BACKBONES["x3d_xs"].weights_url
    path = weights.zoo_file(url, "x3d_xs")
    assert path == hub_checkpoint_dir() / "X3D_XS.pyth"
    assert path.read_bytes() == mirror.files[X3D_PATH]
    assert mirror.requests[X3D_PATH] == 1
    assert cache_listing() == ["X3D_XS.pyth"]  # no temporary file left beside it
    mirror.stop()
    assert weights.zoo_file(url, "x3d_xs") == path
    assert mirror.total() == 1


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_zoo_download_is_refused_and_nothing_is_kept(mirror, zip_format):
    mirror.files[X3D_PATH] = state_dict_bytes(zip_format=zip_format)
    mirror.truncate.add(X3D_PATH)
    with pytest.raises(TiffinError) as excinfo:
        weights.zoo_file(VIDEO_BACKBONES["x3d_xs"].weights_url, "x3d_xs")
    assert "x3d_xs" in one_line(excinfo) and "not kept" in str(excinfo.value)
    assert mirror.requests[X3D_PATH] == 1
    assert cache_listing() == []


def test_zoo_file_with_a_wrong_publisher_hash_is_refused(mirror):
    body = state_dict_bytes(1)
    mirror.files["/models/r3d_18-0123abcd.pth"] = body
    assert not hashlib.sha256(body).hexdigest().startswith("0123abcd")
    with pytest.raises(TiffinError) as excinfo:
        weights.zoo_file("https://download.pytorch.org/models/r3d_18-0123abcd.pth", "r3d_18")
    assert "0123abcd" in one_line(excinfo) and "hash" in str(excinfo.value)
    assert cache_listing() == []


def test_zoo_file_with_the_right_publisher_hash_is_kept(mirror):
    body = state_dict_bytes(2)
    name = f"r3d_18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    mirror.files[f"/models/{name}"] = body
    assert weights.publisher_hash(f"https://download.pytorch.org/models/{name}") == name[7:15]
    path = weights.zoo_file(f"https://download.pytorch.org/models/{name}", "r3d_18")
    assert path.name == name and path.read_bytes() == body
    assert cache_listing() == [name]


def test_zoo_file_offline_with_nothing_cached_names_the_cache_and_tiffin_download(mirror, monkeypatch):
    monkeypatch.setenv("TIFFIN_OFFLINE", "1")
    with pytest.raises(TiffinError) as excinfo:
        weights.zoo_file(VIDEO_BACKBONES["x3d_xs"].weights_url, "x3d_xs")
    message = one_line(excinfo)
    assert str(hub_checkpoint_dir()) in message and "`tiffin download x3d_xs`" in message
    assert mirror.total() == 0


def test_unreachable_mirror_is_one_line_and_fast(monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, closed_port_url())
    start = time.monotonic()
    with pytest.raises(TiffinError) as excinfo:
        weights.zoo_file(VIDEO_BACKBONES["x3d_xs"].weights_url, "x3d_xs")
    assert time.monotonic() - start < 5
    assert "cannot download" in one_line(excinfo) and "tiffin download x3d_xs" in str(excinfo.value)
    assert cache_listing() == []


def test_a_mirror_that_accepts_and_stalls_fails_the_download_instead_of_hanging(monkeypatch):
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
    try:
        monkeypatch.setenv(weights.MIRROR_ENV, f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setattr(weights, "READ_TIMEOUT_S", 0.5)
        start = time.monotonic()
        with pytest.raises(TiffinError) as excinfo:
            weights.zoo_file(VIDEO_BACKBONES["x3d_xs"].weights_url, "x3d_xs")
        assert time.monotonic() - start < 5
        assert "cannot download" in one_line(excinfo) and "timed out" in str(excinfo.value)
        assert cache_listing() == []
    finally:
        listener.close()
    assert socket.getdefaulttimeout() is None  # the process's default is given back


def test_mirrored_keeps_the_publishers_path(monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, "http://mirror.local:8080/base/")
    mirrored = weights.mirrored("https://dl.fbaipublicfiles.com/a/b.pyth?x=1")
    assert mirrored == "http://mirror.local:8080/base/a/b.pyth?x=1"
    monkeypatch.delenv(weights.MIRROR_ENV)
    assert weights.mirrored("https://dl.fbaipublicfiles.com/a/b.pyth") == "https://dl.fbaipublicfiles.com/a/b.pyth"


# --- the Hub -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo_folders(tmp_path_factory) -> dict[str, Path]:
    """Two revisions of a tiny wav2vec2 CTC model as save_pretrained writes them, plus files tiffin must skip."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    folders = {}
    for name, hidden in (("main", 16), ("v1", 24)):
        config = Wav2Vec2Config(vocab_size=8, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, conv_dim=(8,) * 7, num_conv_pos_embeddings=8,
                                num_conv_pos_embedding_groups=2)
        folder = tmp_path_factory.mktemp(f"repo-{name}")
        Wav2Vec2ForCTC(config).save_pretrained(folder)
        (folder / "revision.txt").write_text(name)
        (folder / "pytorch_model.bin").write_bytes(b"a pickle tiffin never fetches")
        (folder / "adapter.fra.safetensors").write_bytes(b"one of MMS's thousand language adapters: not fetched")
        folders[name] = folder
    return folders


@pytest.fixture
def hub(repo_folders, monkeypatch):
    with LoopbackHub() as server:
        server.shas = server.add("org/tiny", repo_folders)
        server.add("org/gated", {"main": repo_folders["main"]}, token=TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def repo_cache(model_id: str) -> Path:
    return hf_hub_cache() / ("models--" + model_id.replace("/", "--"))


def test_hub_model_fetches_configs_and_safetensors_only_then_uses_the_cache(hub, repo_folders):
    assert weights.hub_cached("org/tiny") is None
    snapshot = weights.hub_model("org/tiny")
    assert snapshot == repo_cache("org/tiny") / "snapshots" / hub.shas["main"]
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "revision.txt"]
    assert (snapshot / "model.safetensors").read_bytes() == (repo_folders["main"] / "model.safetensors").read_bytes()
    assert hub.requests[f"/org/tiny/resolve/{hub.shas['main']}/pytorch_model.bin"] == 0
    assert hub.requests[f"/org/tiny/resolve/{hub.shas['main']}/adapter.fra.safetensors"] == 0
    assert weights.hub_cached("org/tiny") == snapshot

    from transformers import Wav2Vec2ForCTC

    assert Wav2Vec2ForCTC.from_pretrained(snapshot).config.hidden_size == 16

    hub.stop()
    assert weights.hub_model("org/tiny") == snapshot


def test_hub_model_pins_a_revision(hub):
    snapshot = weights.hub_model("org/tiny@v1")
    assert snapshot.name == hub.shas["v1"] != hub.shas["main"]
    assert (snapshot / "revision.txt").read_text() == "v1"
    assert weights.hub_cached("org/tiny@v1") == snapshot
    assert weights.hub_cached("org/tiny") is None  # the default branch was never fetched
    assert weights.hub_model(f"org/tiny@{hub.shas['v1']}") == snapshot  # a commit sha pins the same files


def test_unknown_revision_is_one_line(hub):
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/tiny@nope")
    assert "has no revision 'nope'" in one_line(excinfo)


def test_gated_model_needs_hf_token(hub, monkeypatch):
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/gated")
    assert "gated" in one_line(excinfo) and "HF_TOKEN" in str(excinfo.value)
    assert weights.hub_cached("org/gated") is None
    monkeypatch.setenv("HF_TOKEN", "hf_someone_elses")  # a token without access: the Hub's 403
    with pytest.raises(TiffinError, match="is gated"):
        weights.hub_model("org/gated")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    snapshot = weights.hub_model("org/gated")
    assert (snapshot / "model.safetensors").is_file()


def test_unknown_model_is_one_line(hub):
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/missing")
    assert "no such model" in one_line(excinfo) and hub.url in str(excinfo.value)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TIFFIN_OFFLINE"])
def test_hub_offline_with_nothing_cached_names_the_cache_and_tiffin_download(hub, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/tiny")
    message = one_line(excinfo)
    assert str(repo_cache("org/tiny")) in message and "`tiffin download org/tiny`" in message
    assert hub.total() == 0


def test_unreachable_hub_is_one_line_and_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    start = time.monotonic()
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/tiny")
    assert time.monotonic() - start < 5
    assert "cannot be reached" in one_line(excinfo) and "tiffin download org/tiny" in str(excinfo.value)


def test_a_failed_hub_download_leaves_no_snapshot_that_counts(hub, monkeypatch):
    hub.repos["org/tiny"].broken.add("model.safetensors")  # its GET answers 500; the configs arrive
    with pytest.raises(TiffinError) as excinfo:
        weights.hub_model("org/tiny")
    assert "cannot download" in one_line(excinfo)
    assert (repo_cache("org/tiny") / "snapshots" / hub.shas["main"] / "config.json").is_file()
    assert weights.hub_cached("org/tiny") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TiffinError, match="not in the Hugging Face cache"):
        weights.hub_model("org/tiny")


# --- tiffin download ---------------------------------------------------------------------------


def test_download_dispatches_by_name(mirror, hub):
    for name in ("tiffin/tiny-en", "tiffin/tiny-motion", "tiffin/wav2vec2-tiny"):
        with pytest.raises(TiffinError) as excinfo:
            weights.download(name)
        assert "nothing to download" in one_line(excinfo)
    assert weights.download("x3d_xs") == hub_checkpoint_dir() / "X3D_XS.pyth"
    assert mirror.requests[X3D_PATH] == 1
    assert weights.download("org/tiny") == repo_cache("org/tiny") / "snapshots" / hub.shas["main"]
    with pytest.raises(TiffinError) as excinfo:
        weights.download("no_such_backbone")
    assert "not a backbone" in one_line(excinfo)


# --- MMS: one language's adapter ---------------------------------------------------------------


def test_an_mms_model_fetches_only_its_target_language_s_adapter(hub, tmp_path):
    """load_backbone(target_lang="deu") from the Hub: the snapshot, and of the adapter files only deu's;
    the second load reads the cache with the server stopped; no target_lang is the one-line error."""
    from tests.test_ctc_families import MMS_LANGUAGES, save_tiny_mms
    from tiffin.ctc import Vocabulary
    from tiffin.train.speech_model import load_backbone

    sha = hub.add("org/mms", {"main": save_tiny_mms(tmp_path / "mms")})["main"]
    model, vocab, source = load_backbone("org/mms", target_lang="deu")
    snapshot = repo_cache("org/mms") / "snapshots" / sha
    assert source == str(snapshot) and vocab == Vocabulary(MMS_LANGUAGES["deu"]) and model.config.target_lang == "deu"
    assert sorted(p.name for p in snapshot.glob("adapter.*")) == ["adapter.deu.safetensors"]
    assert hub.requests[f"/org/mms/resolve/{sha}/adapter.deu.safetensors"] >= 1
    assert hub.requests[f"/org/mms/resolve/{sha}/adapter.fra.safetensors"] == 0
    assert not any("adapter.fra" in path for path in hub.requests)
    with pytest.raises(TiffinError) as excinfo:
        load_backbone("org/mms")
    assert "--target-lang" in one_line(excinfo) and "fra, deu" in str(excinfo.value)
    with pytest.raises(TiffinError) as excinfo:  # a language the model has no adapter for: its absence, one line
        weights.hub_model("org/mms", target_lang="spa")
    assert "adapter.spa.safetensors" in one_line(excinfo)

    hub.stop()
    again, _, _ = load_backbone("org/mms", target_lang="deu")
    assert again.lm_head.out_features == len(MMS_LANGUAGES["deu"])
