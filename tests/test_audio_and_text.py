"""tiffin.audio_io and tiffin.ctc: torch-free audio loading, resampling, vocabulary, CTC decoding."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from tests.helpers import numbered_frames, write_frames
from tiffin.audio_io import load_audio, read_audio, resample
from tiffin.ctc import BASE_960H_TOKENS, Vocabulary, edit_distance, error_rates
from tiffin.errors import MediaError


@pytest.mark.parametrize("orig,new", [(44100, 16000), (22050, 16000), (8000, 16000), (48000, 16000), (96000, 16000),
                                      (16000, 8000)])
def test_resample_equals_torchaudio(orig, new):
    wave = np.random.default_rng(0).standard_normal(orig * 2 + 17).astype(np.float32)
    ours = resample(wave, orig, new)
    theirs = AF.resample(torch.from_numpy(wave), orig, new).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "FLOAT"), (".wav", "PCM_U8"),
                                            (".flac", "PCM_16"), (".ogg", "VORBIS"), (".mp3", "MPEG_LAYER_III")])
def test_read_audio_formats_and_rates(tmp_path, suffix, subtype):
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone(22050), 22050, subtype=subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and abs(len(wave) - 16000) < 1200  # mp3 adds encoder delay
    assert 0.3 < np.abs(wave).max() < 0.7


def test_stereo_is_mixed_down_and_m4a_goes_through_pyav(tmp_path):
    left, right = tone(16000, freq=300), tone(16000, freq=500)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000)
    wave, rate = read_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-4)
    path = tmp_path / "a.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100, layout="stereo")
        for i in range(0, 44100, 1024):
            block = np.tile(tone(44100)[i : i + 1024], (2, 1))
            if block.shape[1] < 1024:
                break
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    wave, rate = read_audio(path)
    assert rate == 44100 and 40000 < len(wave) < 48000 and np.abs(wave).max() > 0.3


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "nan", "video_only"])
def test_bad_audio_is_a_media_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "nan":
        wave = tone(16000)
        wave[100] = np.nan
        sf.write(path, wave, 16000, subtype="FLOAT")
    elif kind == "video_only":
        path = write_frames(tmp_path / "v.mp4", numbered_frames(5))
    with pytest.raises(MediaError) as err:
        read_audio(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_normalisation_to_the_base_vocabulary_counts_what_it_leaves_out():
    vocab = Vocabulary()
    assert vocab.tokens == BASE_960H_TOKENS and vocab.case == "upper" and vocab.blank_id == 0
    result = vocab.normalise("Hello,  world! It\u2019s 3 o'clock\u2014caf\u00e9 well-known")
    assert result.text == "HELLO WORLD IT'S O'CLOCK CAF WELL KNOWN"
    assert result.unknown == {"3": 1, "\u00c9": 1}
    assert result.punctuation == {",": 1, "!": 1}


def test_encode_and_greedy_ctc_decode():
    vocab = Vocabulary()
    ids = vocab.encode("HI YOU")
    assert vocab.decode(ids) == "HI YOU"
    i = vocab.index
    frames = [0, i["H"], i["H"], 0, i["I"], i["|"], i["|"], 0, i["Y"], i["O"], 0, i["O"], i["U"], 0, i["<s>"]]
    assert vocab.decode(frames) == "HI YOOU"  # a blank between repeats keeps both
    logits = np.eye(len(vocab))[frames]
    assert vocab.decode_logits(logits) == "HI YOOU"
    assert vocab.decode([0, 0, 0]) == ""


def test_vocabulary_from_data_learns_a_new_alphabet():
    vocab = Vocabulary.from_texts(["Grüß Gott!", "ÄPFEL und Birnen"])
    assert vocab.tokens[:5] == ("<pad>", "<s>", "</s>", "<unk>", "|")
    assert {"ü", "ß", "ä"} <= set(vocab.tokens) and "!" not in vocab.tokens
    assert vocab.normalise("Äpfel!").text == "äpfel" and not vocab.normalise("Äpfel!").unknown


def test_error_rates():
    assert edit_distance("kitten", "sitting") == 3
    wer, cer = error_rates(["THE CAT SAT", "HI"], ["THE BAT SAT", "HI"])
    assert wer == pytest.approx(1 / 4) and cer == pytest.approx(1 / 13)
