"""train.speech_model: backbones, weights from save_pretrained folders and the HF cache, in-graph normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC
from typer.testing import CliRunner

from tests.speech_media import utterance
from tiffin.cli import app
from tiffin.ctc import BASE_960H_TOKENS, Vocabulary
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.backbones import SPEECH_BACKBONES
from tiffin.train.speech_model import SpeechNet, fit_head, load_backbone

TINY = SPEECH_BACKBONES["tiffin/wav2vec2-tiny"].config


@pytest.mark.parametrize("name", list(SPEECH_BACKBONES))
def test_table_parameter_counts_match_the_architectures(name):
    info = SPEECH_BACKBONES[name]
    with torch.device("meta"):
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**info.config, vocab_size=len(BASE_960H_TOKENS)))
    assert sum(p.numel() for p in model.parameters()) == info.params


def test_backbones_speech_json_lists_the_table():
    result = CliRunner().invoke(app, ["backbones", "speech", "--json"])
    listed = json.loads(result.output)
    rows = [r for r in listed if r["name"] in SPEECH_BACKBONES]
    assert [r["name"] for r in listed[:len(rows)]] == [r["name"] for r in rows]  # the table first, tiny-en leading
    assert sorted(r["name"] for r in rows) == sorted(SPEECH_BACKBONES) and rows[0]["name"] == "tiffin/tiny-en"
    assert all(isinstance(r["params"], int) and r["sample_rate"] == 16000 for r in rows)
    known = {r["family"]: r for r in listed[len(rows):]}  # then published ids of every CTC family
    assert {"hubert", "wavlm", "data2vec-audio", "parakeet_ctc"} <= set(known)
    assert not any(r["weights_present"] for r in known.values())  # the test session's caches are empty


def tiny_net(normalize=True, **overrides) -> SpeechNet:
    config = Wav2Vec2Config(**{**TINY, **overrides}, vocab_size=len(BASE_960H_TOKENS))
    torch.manual_seed(0)
    return SpeechNet(Wav2Vec2ForCTC(config).eval(), SpeechSpec(normalize=normalize, vocab=BASE_960H_TOKENS))


def test_standard_conv_strides_give_50_frames_a_second():
    net = tiny_net()
    with torch.no_grad():
        logits = net(torch.randn(1, 32000), torch.tensor([32000]))
    assert logits.shape[1] == int(net.output_lengths(torch.tensor([32000]))) == 99


def test_in_graph_normalisation_matches_the_feature_extractor():
    net = tiny_net()
    for wave in (utterance(["red", "cat"]), utterance(["go"])):
        # the feature extractor's per-utterance normalisation, then the plain Hugging Face model
        features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)(
            [wave], sampling_rate=16000, return_tensors="pt").input_values
        with torch.no_grad():
            ours = net(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            theirs = net.model(features).logits
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_padding_never_changes_an_utterance(norm):
    """Group-norm (wav2vec2-base) and layer-norm (large-lv60) encoders: an utterance padded in a
    batch gets the logits it gets alone, so batched training, serving and prediction agree."""
    extra = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True) if norm == "layer" else {}
    net = tiny_net(**extra)
    long, short = torch.from_numpy(utterance(["one", "two", "cat"])), torch.from_numpy(utterance(["up"]))
    batch = torch.zeros(2, len(long))
    batch[0], batch[1, : len(short)] = long, short
    with torch.no_grad():
        together = net(batch, torch.tensor([len(long), len(short)]))
        alone = net(short[None], torch.tensor([len(short)]))
    frames = alone.shape[1]
    torch.testing.assert_close(together[1, :frames], alone[0], atol=1e-4, rtol=1e-4)


def _save_tiny(folder, vocab_tokens=BASE_960H_TOKENS):
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY, vocab_size=len(vocab_tokens)))
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_tokens)}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return model


def test_weights_load_from_a_save_pretrained_folder(tmp_path):
    saved = _save_tiny(tmp_path / "m")
    model, vocab, source = load_backbone(str(tmp_path / "m"))
    assert vocab == Vocabulary(BASE_960H_TOKENS) and source == str(tmp_path / "m")
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_weights_load_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--facebook--wav2vec2-base-960h"
    _save_tiny(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, vocab, source = load_backbone("facebook/wav2vec2-base-960h")
    assert source.endswith("snapshots/0123abc") and vocab.tokens == BASE_960H_TOKENS
    assert model.config.hidden_size == TINY["hidden_size"]


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TiffinError) as err:
        load_backbone("facebook/wav2vec2-base-960h")
    message = str(err.value)
    assert str(tmp_path / "hub" / "models--facebook--wav2vec2-base-960h") in message
    assert "save_pretrained" in message and "tiffin/tiny-en" in message and "--no-pretrained" in message
    model, vocab, source = load_backbone("facebook/wav2vec2-base-960h", pretrained=False)
    assert source == "config" and model.config.hidden_size == 768


def test_head_is_kept_for_the_same_vocabulary_and_replaced_for_a_new_one(tmp_path):
    _save_tiny(tmp_path / "m")
    model, vocab, _ = load_backbone(str(tmp_path / "m"))
    head = model.lm_head
    assert fit_head(model, vocab, vocab) is False and model.lm_head is head
    german = Vocabulary.from_texts(["grüße aus köln"])
    assert fit_head(model, german, vocab) is True
    assert model.lm_head.out_features == len(german) == model.config.vocab_size
    assert model.config.pad_token_id == 0


def test_logits_have_one_frame_per_conv_step_and_decode_greedily():
    from tiffin.inference import output_frames

    net = tiny_net()
    wave = utterance(["cat"])
    with torch.no_grad():
        logits = net(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert logits.shape == (1, output_frames(len(wave), net.kernels, net.strides), len(Vocabulary()))
    assert np.isfinite(logits.numpy()).all()
    vocab = Vocabulary()
    path = ["<pad>", "C", "C", "<pad>", "A", "|", "T", "T", "<pad>", "T"]  # repeats merge, blanks split
    one_hot = np.eye(len(vocab), dtype=np.float32)[[vocab.index[t] for t in path]]
    assert vocab.decode_logits(one_hot) == "CA TT"


def test_sampling_rate_and_normalisation_come_from_the_saved_processor(tmp_path):
    """transformers 5's save_pretrained writes processor_config.json with the feature extractor
    nested inside; its rate and do_normalize are the model's."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from tiffin.train.predict import load_speech_model

    folder = tmp_path / "m"
    _save_tiny(folder)
    (folder / "preprocessor_config.json").unlink()
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=8000, do_normalize=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    spec = load_speech_model(folder).spec
    assert (spec.sample_rate, spec.normalize) == (8000, False)