"""Every CTC family tiffin takes (train.speech_model.CTC_FAMILIES: the raw-waveform ones, OmniASR CTC
among them, and the log-mel wav2vec2-bert and Parakeet CTC), as tiny random models: padding never changes
an utterance, frame counts, the log-mel front-ends equal transformers' feature extractors, word-piece
vocabularies (Parakeet's SentencePiece tokens, blank last; OmniASR's, blank first) decode greedily and in a
lexicon, MMS's language adapters load by target_lang, unsupported families are refused in one line, and
fine-tune -> export (ONNX, behind the parity gate) -> predict. HuBERT, Parakeet, OmniASR and a tiny MMS run
in `make test`; the whole matrix is marked `families` (`make test-families`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tiffin
from tests.speech_media import WORDS, utterance, write_corpus
from tiffin.ctc import BASE_960H_TOKENS, WORD_START, Vocabulary
from tiffin.errors import TiffinError
from tiffin.spec import SpeechSpec
from tiffin.train.speech_model import CTC_FAMILIES, SpeechNet, build_ctc_model, build_speech_net, load_backbone

# small but shaped like the real ones: four conv layers with wav2vec2's 320-sample hop (50 frames
# a second), a 2-layer transformer; no dropout or masking, so two training steps are reproducible
COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=len(BASE_960H_TOKENS),
              hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
              final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)
# what a family needs besides (its defaults are sized for the real models)
EXTRA = {
    "wav2vec2-conformer": dict(conv_depthwise_kernel_size=7),
    "data2vec-audio": dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5),  # layers of positional convs
    "sew-d": dict(max_position_embeddings=64, position_buckets=16),
}
# A Parakeet-like SentencePiece vocabulary for the test corpus' words (tests.speech_media.WORDS): pieces
# in merge order, "▁" marking word starts, <unk> first and the blank <pad> last, as Parakeet's tokenizer
M = WORD_START
PIECES = ("<unk>", M + "t", M + "c", "at", M + "cat", "ne", M + "o", "wo", M + "g", M + "go", M + "u", M + "up",
          "ed", M + "r", M, "t", "c", "a", "o", "n", "e", "w", "r", "d", "g", "u", "p", "<pad>")
# the log-mel families, tiny (no dropout or masking, so two training steps are reproducible)
LOG_MEL = {
    "wav2vec2-bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          output_hidden_size=32, conv_depthwise_kernel_size=3, vocab_size=len(BASE_960H_TOKENS),
                          hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                          final_dropout=0.0, conformer_conv_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0),
    "parakeet_ctc": dict(vocab_size=len(PIECES), pad_token_id=len(PIECES) - 1, encoder_config=dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_kernel_size=5,
        subsampling_conv_channels=8, dropout=0.0, dropout_positions=0.0, layerdrop=0.0, activation_dropout=0.0,
        attention_dropout=0.0)),
}
# OmniASR CTC's SentencePiece layout: <s> first, the CTC blank (its blank_token_id), <pad> second (its pad_token_id)
OMNI_PIECES = ("<s>", "<pad>", "</s>") + PIECES[:-1]
# families whose encoder settings nest in a sub-config (OmniASR's audio_config), shaped as COMMON
NESTED = {
    "omniasr_ctc": dict(vocab_size=len(OMNI_PIECES), blank_token_id=0, pad_token_id=1, audio_config=dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32, 32, 32),
        conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        layerdrop=0.0)),
}
FAMILIES = list(CTC_FAMILIES)
# the padding check also covers the variants whose masking differs
VARIANTS = [(f, {}) for f in FAMILIES] + [("wav2vec2-conformer", {"position_embeddings_type": "rotary"}),
                                          ("hubert", {"feat_extract_norm": "layer", "conv_bias": True}),
                                          ("sew", {"feat_extract_norm": "layer", "conv_bias": True}),
                                          ("wav2vec2-bert", {"add_adapter": True, "num_adapter_layers": 2})]


def tiny_config(family: str, **overrides):
    from transformers import AutoConfig

    if family in LOG_MEL or family in NESTED:
        return AutoConfig.for_model(family, **{**LOG_MEL.get(family, NESTED.get(family)), **overrides})
    return AutoConfig.for_model(family, **{**COMMON, **EXTRA.get(family, {}), **overrides})


def extractor(family: str):
    """The family's transformers feature extractor, with its default settings (None: raw waveform)."""
    from transformers import OmniASRFeatureExtractor, ParakeetFeatureExtractor, SeamlessM4TFeatureExtractor

    return {"wav2vec2-bert": SeamlessM4TFeatureExtractor, "parakeet_ctc": ParakeetFeatureExtractor,
            "omniasr_ctc": OmniASRFeatureExtractor}.get(family, lambda: None)()


def save_pieces_tokenizer(folder: Path, pieces: tuple[str, ...] = PIECES) -> None:
    """PIECES (or OMNI_PIECES) as a Parakeet (OmniASR) tokenizer would save them: tokenizer.json of a BPE over
    the pieces whose merges follow piece order (transformers' SentencePiece converter), <pad> (and OmniASR's
    <s> and </s>) added special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import ParakeetTokenizer
    from transformers.tokenization_utils_base import generate_merges

    special = [t for t in pieces if t.startswith("<")]
    vocab = {t: i for i, t in enumerate(pieces) if i < len(pieces) - 1 or t != "<pad>"}  # a last <pad>: added
    merges = generate_merges(vocab, {t: -i for t, i in vocab.items() if t not in special}, skip_tokens=special)
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=M, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=M, prepend_scheme="always")
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special if t != "<unk>"])
    ParakeetTokenizer(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>").save_pretrained(folder)


def save_tiny(family: str, folder: Path) -> Path:
    """A save_pretrained folder of a random tiny CTC model of `family`, with wav2vec2-base-960h's
    characters (vocab.json) and feature extractor settings; Parakeet with PIECES (tokenizer.json),
    and the log-mel families with their own feature extractor's config."""
    torch.manual_seed(0)
    build_ctc_model(tiny_config(family)).save_pretrained(folder)
    if family == "parakeet_ctc":
        save_pieces_tokenizer(folder)
    elif family == "omniasr_ctc":
        save_pieces_tokenizer(folder, OMNI_PIECES)
    else:
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(BASE_960H_TOKENS)}))
    if family in LOG_MEL or family == "omniasr_ctc":
        extractor(family).save_pretrained(folder)
    else:
        (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return folder


@pytest.mark.parametrize("family,overrides", VARIANTS,
                         ids=[f + "".join(f"-{v}" for v in o.values() if isinstance(v, str))
                              + ("-adapter" if o.get("add_adapter") else "") for f, o in VARIANTS])
def test_padding_never_changes_an_utterance_and_frames_are_counted(family, overrides):
    """Alone or padded in a batch of two, an utterance gets the same logits, and output_lengths
    says how many are its own; odd lengths too (SEW's pools of two frames, wav2vec2-bert's pairs of
    fbank frames). Alone, it gets the Hugging Face model's logits on what the family's own feature
    extractor makes of it (the log-mel families: on every frame it owns but those an odd pair's padding
    reaches through wav2vec2-bert's adapter, where tiffin zeroes the padding and transformers does not)."""
    torch.manual_seed(0)
    net = SpeechNet(build_ctc_model(tiny_config(family, **overrides)).eval(), SpeechSpec(vocab=BASE_960H_TOKENS))
    long = torch.from_numpy(utterance(["one", "two", "cat"]))
    for cut in (0, 320) if family not in LOG_MEL else (0, 160, 320):  # an even and an odd number of frames
        short = torch.from_numpy(utterance(["up", "go"]))[: -cut or None]
        batch = torch.zeros(2, len(long))
        batch[0], batch[1, : len(short)] = long, short
        with torch.no_grad():
            together = net(batch, torch.tensor([len(long), len(short)]))
            alone = net(short[None], torch.tensor([len(short)]))
        frames = int(net.output_lengths(torch.tensor([len(short)])))
        assert alone.shape[1] == frames and together.shape[1] == int(net.output_lengths(torch.tensor([len(long)])))
        torch.testing.assert_close(together[1, :frames], alone[0], atol=1e-4, rtol=1e-4)
        if family in LOG_MEL:  # alone, it is the plain Hugging Face model on its extractor's features
            fbank_frames = (len(short) - 400) // 160 + 1
            if overrides.get("add_adapter") and fbank_frames % 2:
                continue
            features = extractor(family)(short.numpy(), sampling_rate=16000, return_tensors="pt")
            with torch.no_grad():
                theirs = net.model(**features).logits[0, :frames]
            torch.testing.assert_close(alone[0], theirs, atol=1e-4, rtol=1e-4)
        elif family == "omniasr_ctc":  # alone, it is the plain Hugging Face model on its extractor's waveform
            with torch.no_grad():
                theirs = net.model(**extractor(family)(short.numpy(), sampling_rate=16000)).logits
            torch.testing.assert_close(alone, theirs, atol=1e-4, rtol=1e-4)
        elif net.squeeze == 1:  # alone, it is the plain Hugging Face model on the normalised waveform
            x = (short - short.mean()) / torch.sqrt(short.var(unbiased=False) + 1e-7)
            with torch.no_grad():
                torch.testing.assert_close(alone, net.model(x[None]).logits, atol=1e-4, rtol=1e-4)


def test_a_one_frame_recording_gets_its_frame_in_every_family():
    """The host pads a blip to one frame (tiffin.inference.receptive_field: 560 samples for wav2vec2-bert's
    pair of fbank frames, 160 for Parakeet's); SEW pools two, Parakeet subsamples by eight, and each still
    answers it."""
    from tiffin.inference import receptive_field

    for family, need in (("sew", None), ("sew-d", None), ("hubert", None), ("wav2vec2-bert", 560),
                         ("parakeet_ctc", 160)):
        net = SpeechNet(build_ctc_model(tiny_config(family)).eval(), SpeechSpec(vocab=BASE_960H_TOKENS))
        samples = receptive_field(net.kernels, net.strides)
        assert need is None or samples == need
        with torch.no_grad():
            logits = net(torch.randn(1, samples), torch.tensor([samples]))
        assert logits.shape[1] == 1 and torch.isfinite(logits).all()


def test_a_family_without_a_front_end_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "lasr"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "lasr_ctc"}))
    with pytest.raises(TiffinError) as err:
        load_backbone(str(folder))
    message = str(err.value)
    assert "\n" not in message and "'lasr_ctc'" in message and "front-end" in message
    assert all(family in message for family in CTC_FAMILIES)
    with pytest.raises(TiffinError, match="lasr_ctc"):  # nor from a checkpoint's config
        build_speech_net({"model_type": "lasr_ctc"}, SpeechSpec())
    result = tiffin("predict", folder, tmp_path / "x.wav")
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1 and "lasr_ctc" in errors[0], result.output


@pytest.mark.parametrize("family", list(LOG_MEL))
def test_a_log_mel_front_end_computes_what_the_family_s_extractor_does(family, tmp_path):
    """The in-graph front-end, built from the extractor config saved beside the model, equals transformers'
    feature extractor on each utterance alone, counts its real frames as the extractor's attention mask
    does, and gives an utterance the same features alone and padded in a batch."""
    from tiffin.train.speech_features import build_front_end, front_end_settings

    extractor(family).save_pretrained(tmp_path)
    settings = front_end_settings(tmp_path, CTC_FAMILIES[family].features)
    assert settings["kind"] == type(extractor(family)).__name__ and settings["sampling_rate"] == 16000
    front_end = build_front_end(settings)
    waves = [utterance(["one", "two", "cat"]), utterance(["up"])[:-100], utterance(["go"])[:-250]]
    batch = torch.zeros(len(waves), max(len(w) for w in waves))
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = torch.from_numpy(wave)
    lengths = torch.tensor([len(w) for w in waves])
    with torch.no_grad():
        together, frames = front_end(batch, lengths)
    for i, wave in enumerate(waves):
        theirs = extractor(family)(wave, sampling_rate=16000, return_tensors="pt")
        n = int(theirs["attention_mask"][0].sum())
        assert int(frames[i]) == n == int(front_end.output_lengths(lengths[i : i + 1]))
        with torch.no_grad():
            alone, _ = front_end(torch.from_numpy(wave)[None], lengths[i : i + 1])
        torch.testing.assert_close(alone[0, :n], theirs["input_features"][0, :n], atol=3e-4, rtol=1e-4)
        torch.testing.assert_close(together[i, :n], alone[0, :n], atol=3e-4, rtol=1e-4)


def test_word_pieces_decode_with_their_own_blank_greedily_and_in_a_lexicon(tmp_path):
    """Parakeet's kind of vocabulary, read from its tokenizer.json: SentencePiece pieces, blank last (the
    model's pad_token_id); words spelt as the tokenizer spells them; hand-made logits decode to the right
    words greedily and with beam search over a word list, word timestamps included."""
    from tokenizers import Tokenizer

    from tiffin.ctc_beam import BeamDecoder, BeamOptions
    from tiffin.train.speech_model import read_vocab

    save_pieces_tokenizer(tmp_path)
    vocab = read_vocab(tmp_path, tiny_config("parakeet_ctc"))
    assert vocab == Vocabulary(PIECES, len(PIECES) - 1, M) and vocab.blank_id == len(PIECES) - 1
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for word in WORDS:
        assert list(vocab.spell(word)) == tokenizer.encode(word, add_special_tokens=False).ids, word
    assert vocab.normalise("Go, UP! Red cat?").text == "go up red cat"
    assert vocab.decode(vocab.encode("two red cat")) == "two red cat"
    blank, ix = vocab.blank_id, vocab.index
    # "one" in other pieces than the tokenizer's, a piece held for two frames, a repeat after a blank
    path = [blank, ix[M + "cat"], ix[M + "cat"], blank, ix[M + "o"], ix["n"], ix["e"], blank, blank,
            ix[M + "go"], ix[M + "go"], blank, ix[M + "go"], blank, ix[M + "r"], ix["ed"], blank]
    logits = np.full((len(path), len(PIECES)), -4.0, dtype=np.float32)
    logits[np.arange(len(path)), path] = 4.0
    assert vocab.decode_logits(logits) == "cat one go go red"
    words = tmp_path / "words.txt"
    words.write_text("cat\none\ngo\nred\nup\n")
    beam = BeamDecoder(vocab, BeamOptions(words=words))
    assert beam.decode(logits) == "cat one go go red"
    timed = beam.words(logits, 0.08)
    assert [w["word"] for w in timed] == ["cat", "one", "go", "go", "red"]
    assert [(w["start"], w["end"]) for w in timed] == [(0.08, 0.24), (0.32, 0.56), (0.72, 0.88), (0.96, 1.04),
                                                       (1.12, 1.28)]


def test_a_hub_id_of_another_family_loads_from_the_cache_offline_with_or_without_its_weights(tmp_path, monkeypatch):
    """A Hub id goes through train.weights.hub_model (offline here: the cached snapshot), and
    --no-pretrained builds the same family from the downloaded config alone."""
    from transformers import WavLMForCTC

    repo = tmp_path / "hub" / "models--someone--wavlm-tiny-ctc"
    saved = save_tiny("wavlm", repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, vocab, source = load_backbone("someone/wavlm-tiny-ctc")
    assert isinstance(model, WavLMForCTC) and source.endswith("snapshots/0123abc") and vocab.tokens == BASE_960H_TOKENS
    weights = WavLMForCTC.from_pretrained(saved).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    fresh, _, _ = load_backbone("someone/wavlm-tiny-ctc", pretrained=False)
    assert isinstance(fresh, WavLMForCTC) and fresh.config.hidden_size == COMMON["hidden_size"]
    assert not torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    with pytest.raises(TiffinError, match="someone--wavlm-other"):  # not cached, offline: weights.py's one line
        load_backbone("someone/wavlm-other")


def test_checkpoint_configs_without_a_model_type_are_wav2vec2():
    """model_config of a wav2vec2 checkpoint rebuilds as wav2vec2, with or without its model_type."""
    from transformers import Wav2Vec2ForCTC

    config = tiny_config("wav2vec2").to_dict()
    for saved in (config, {k: v for k, v in config.items() if k != "model_type"}):
        assert isinstance(build_speech_net(saved, SpeechSpec()).model, Wav2Vec2ForCTC)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ctc-corpus")
    rows = write_corpus(root / "clips", 8)
    (root / "train.csv").write_text("speech_files,targets\n" + "\n".join(f"clips/{n},{t}" for n, t in rows) + "\n")
    return root


def fine_tune_export_predict(family: str, corpus: Path, tmp_path: Path, backbone: Path | None = None,
                             **options) -> None:
    """Two steps through the Python API from a save_pretrained folder (`backbone`, else save_tiny's, with
    SpeechRecognition's `options`), then `tiffin export --format onnx` (the parity gate) and `tiffin predict`:
    the artifact transcribes as the checkpoint does, and so does the run's Hugging Face folder, of the
    family's own class (its tokenizer and feature extractor read back as they were saved)."""
    import pytorch_lightning as pl
    from transformers import AutoModelForCTC

    from tiffin import Trainer
    from tiffin.speech import SpeechRecognition, SpeechRecognitionData
    from tiffin.train.speech_task import save_hf

    backbone = backbone or save_tiny(family, tmp_path / family)
    pl.seed_everything(0)
    model = SpeechRecognition(backbone=str(backbone), learning_rate=1e-3, **options)
    assert model.net.model.config.model_type == family
    data = SpeechRecognitionData.from_csv("speech_files", "targets", train_file=corpus / "train.csv", batch_size=4,
                                          num_workers=0)
    trainer = Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.finetune(model, datamodule=data, strategy="no_freeze")
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)

    out = tmp_path / "onnx"
    result = tiffin("export", checkpoint, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    files = sorted((corpus / "clips").glob("*.*"))[:3]
    answers = [json.loads(tiffin("predict", m, *files, "--json").stdout) for m in (out, checkpoint)]
    assert [r["text"] for r in answers[0]] == [r["text"] for r in answers[1]]

    save_hf(checkpoint, tmp_path / "hf")
    hf = AutoModelForCTC.from_pretrained(tmp_path / "hf")
    assert type(hf) is type(model.net.model)
    again = json.loads(tiffin("predict", tmp_path / "hf", *files, "--json").stdout)
    assert [r["text"] for r in again] == [r["text"] for r in answers[1]]


def test_hubert_fine_tunes_exports_and_predicts_like_its_checkpoint(corpus, tmp_path):
    fine_tune_export_predict("hubert", corpus, tmp_path)


def test_parakeet_with_its_word_pieces_fine_tunes_exports_and_predicts_like_its_checkpoint(corpus, tmp_path):
    """A log-mel family end to end: the front-end in the exported graph, SentencePiece pieces with the blank
    last in tiffin.json, the torch-free host decoding them."""
    fine_tune_export_predict("parakeet_ctc", corpus, tmp_path)
    meta = json.loads((tmp_path / "onnx" / "tiffin.json").read_text())
    assert meta["vocab"] == list(PIECES) and meta["preprocessing"]["blank_id"] == len(PIECES) - 1
    assert meta["preprocessing"]["word_start"] == M and meta["preprocessing"]["conv_stride"] == [160, 2, 2, 2]
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["parity"]["transcript_cer"] == 0
    # beam search over a word list spelt in the pieces, recorded in the artifact and used by predict
    (tmp_path / "words.txt").write_text("\n".join(WORDS) + "\n")
    result = tiffin("export", tmp_path / "model.ckpt", "--format", "onnx", "--out", tmp_path / "beam",
                    "--words", tmp_path / "words.txt")
    assert result.exit_code == 0, result.output
    files = sorted((corpus / "clips").glob("*.*"))[:2]
    answers = json.loads(tiffin("predict", tmp_path / "beam", *files, "--json", "--timestamps").stdout)
    for answer in answers:
        assert all(word in WORDS for word in answer["text"].split())
        assert [w["word"] for w in answer.get("words", [])] == answer["text"].split()


def test_omniasr_with_its_word_pieces_blank_first_fine_tunes_exports_and_predicts_like_its_checkpoint(corpus,
                                                                                                    tmp_path):
    """A raw-waveform family of other names (audio_tower, a [B, 1, samples] input, a sample padding_mask) that
    spells in SentencePiece pieces whose blank is <s> (blank_token_id 0), not its <pad> (pad_token_id 1): read so
    from its tokenizer.json, recorded so in the artifact, and read back so from the run's Hugging Face folder."""
    from tiffin.train.speech_model import ctc_config, read_vocab

    fine_tune_export_predict("omniasr_ctc", corpus, tmp_path)
    assert read_vocab(tmp_path / "omniasr_ctc", tiny_config("omniasr_ctc")) == Vocabulary(OMNI_PIECES, 0, M)
    meta = json.loads((tmp_path / "onnx" / "tiffin.json").read_text())
    assert meta["vocab"] == list(OMNI_PIECES) and meta["preprocessing"]["blank_id"] == 0
    assert meta["preprocessing"]["word_start"] == M and meta["preprocessing"]["conv_stride"] == [5, 4, 4, 4]
    assert meta["parity"]["max_abs_diff"] < 1e-4
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["blank_token_id"] == 0
    assert read_vocab(tmp_path / "hf", ctc_config(saved)) == Vocabulary(OMNI_PIECES, 0, M)


def test_a_new_vocabulary_gives_parakeet_a_character_head(tmp_path):
    """vocab="from-data" (`--vocab from-data`) over a word-piece model: a new CTC head (Parakeet's 1x1 conv)
    for the transcripts' characters, `<pad>` the blank, `|` between words, and a CTC loss on them."""
    from tiffin.speech import SpeechRecognition

    model = SpeechRecognition(backbone=str(save_tiny("parakeet_ctc", tmp_path / "p")), vocab="from-data")
    assert model.vocab.pieces and model.vocab.blank_id == len(PIECES) - 1
    model.learn_vocabulary(["one two", "red cat go up"])
    vocab = model.vocab
    assert not vocab.pieces and vocab.blank_id == 0 and "|" in vocab.tokens
    assert model.spec.word_start is None and model.spec.blank_id is None and model.spec.front_end["kind"] == \
        "ParakeetFeatureExtractor"
    head = model.net.head()
    assert isinstance(head, torch.nn.Conv1d) and head.out_channels == len(vocab)
    wave = torch.from_numpy(utterance(["red", "cat"]))[None]
    labels = torch.tensor([vocab.encode("red cat")])
    loss, logits, frames = model._loss({"wave": wave, "lengths": torch.tensor([wave.shape[1]]), "labels": labels,
                                        "label_lengths": torch.tensor([labels.shape[1]])})
    assert logits.shape == (1, int(frames), len(vocab)) and torch.isfinite(loss)


@pytest.mark.families
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fine_tunes_exports_and_predicts_like_its_checkpoint(family, corpus, tmp_path):
    fine_tune_export_predict(family, corpus, tmp_path)


# MMS-like: a tiny wav2vec2 with per-language attention adapters (adapter_attn_dim, stable layer norm as MMS),
# two languages' adapter files and a multilingual vocab.json; deu's vocabulary is larger than the model's head
MMS_LANGUAGES = {"fra": BASE_960H_TOKENS, "deu": BASE_960H_TOKENS + ("Ä", "Ö", "Ü")}


def save_tiny_mms(folder: Path) -> Path:
    """A save_pretrained folder as facebook/mms-1b-all's is laid out: the model, `adapter.<lang>.safetensors`
    for each of MMS_LANGUAGES (its adapter layers and a CTC head for its vocabulary), vocab.json as
    {lang: {token: id}}, and the feature extractor's settings."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny_config("wav2vec2", adapter_attn_dim=8, do_stable_layer_norm=True,
                                       feat_extract_norm="layer", conv_bias=True))
    model.save_pretrained(folder)
    for seed, (lang, tokens) in enumerate(MMS_LANGUAGES.items()):
        generator = torch.Generator().manual_seed(seed + 1)
        weights = {name: torch.randn((len(tokens), *p.shape[1:]) if name.startswith("lm_head") else p.shape,
                                     generator=generator) * 0.1 for name, p in model._get_adapters().items()}
        save_file(weights, folder / f"adapter.{lang}.safetensors")
    (folder / "vocab.json").write_text(json.dumps({lang: {t: i for i, t in enumerate(tokens)}
                                                  for lang, tokens in MMS_LANGUAGES.items()}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return folder


def test_mms_language_adapters_need_a_target_language_said_in_one_line(corpus, tmp_path):
    from tiffin.speech import SpeechRecognition

    folder = save_tiny_mms(tmp_path / "mms")
    with pytest.raises(TiffinError) as err:
        load_backbone(str(folder))
    message = str(err.value)
    assert "\n" not in message and "adapter_attn_dim" in message and "--target-lang" in message
    assert "fra" in message and "deu" in message
    with pytest.raises(TiffinError, match="target_lang"):  # the Python API says the same
        SpeechRecognition(backbone=str(folder))
    with pytest.raises(TiffinError) as err:  # a language it has no vocabulary nor adapter for
        load_backbone(str(folder), target_lang="spa")
    assert "\n" not in str(err.value) and "spa" in str(err.value) and "fra, deu" in str(err.value)
    for option in ([], ["--target-lang", "spa"]):  # `tiffin train speech --target-lang` takes it to the model
        result = tiffin("train", "speech", "--train-csv", corpus / "train.csv", "--backbone", folder, "--max-steps",
                        "1", "--num-workers", "0", "--no-progress", "--out", tmp_path / f"run{len(option)}", *option)
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert ("--target-lang spa" if option else "choose a language with --target-lang") in errors[0]


def test_mms_loads_its_target_language_s_adapter_and_vocabulary(tmp_path):
    """target_lang: the language's adapter weights (and its CTC head, resized to its vocabulary) as transformers'
    own load_adapter gives them, that language's vocabulary, the language recorded in the config; in training mode."""
    from transformers import Wav2Vec2ForCTC

    folder = save_tiny_mms(tmp_path / "mms")
    model, vocab, source = load_backbone(str(folder), target_lang="deu")
    assert model.training and source == str(folder)
    assert vocab == Vocabulary(MMS_LANGUAGES["deu"]) and model.lm_head.out_features == len(MMS_LANGUAGES["deu"])
    assert model.config.target_lang == "deu" and model.config.to_dict()["target_lang"] == "deu"
    theirs = Wav2Vec2ForCTC.from_pretrained(folder)
    theirs.load_adapter("deu")
    wave = torch.from_numpy(utterance(["one", "two"]))[None]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(wave).logits, theirs.eval()(wave).logits, atol=1e-5, rtol=0)
        other, _, _ = load_backbone(str(folder), target_lang="fra")
        assert other.lm_head.out_features == len(MMS_LANGUAGES["fra"])
        assert not torch.allclose(other.eval()(wave).logits[..., :32], model(wave).logits[..., :32])


def test_mms_with_a_target_language_fine_tunes_exports_and_predicts_like_its_checkpoint(corpus, tmp_path):
    """The adapter is part of the fine-tuned model's weights: the checkpoint records target_lang and rebuilds
    with no adapter file, and the run's Hugging Face folder (none there either) predicts as it does."""
    fine_tune_export_predict("wav2vec2", corpus, tmp_path, backbone=save_tiny_mms(tmp_path / "mms"),
                             target_lang="deu")
    checkpoint = torch.load(tmp_path / "model.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["tiffin"]["model_config"]["target_lang"] == "deu"
    assert not list((tmp_path / "hf").glob("adapter.*"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["target_lang"] == "deu"
