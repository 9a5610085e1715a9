"""tiffin.speech_stream's parts against the whole-recording functions they replace: windows cut
from blocks as window_starts cuts them, stitched frames as stitch joins them, greedy words as
Vocabulary.decode reads them, beam words (pruned as they stream) as one decode of all the frames."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import VOCAB, frames, spell
from tiffin.chunking import stitch, window_starts
from tiffin.ctc import Vocabulary
from tiffin.errors import TiffinError
from tiffin.speech_stream import GreedyWords, Stitcher, Transcription, WindowCutter, is_silent, silence_threshold

RATE, HOP = 16000, 320


@pytest.mark.parametrize("seconds", [0.3, 3.0, 3.02, 7.7, 61.3])
@pytest.mark.parametrize("block", [1, 997, 16000, 250_000])
def test_windows_cut_from_blocks_are_window_starts_windows(seconds, block):
    wave = np.random.default_rng(1).standard_normal(int(seconds * RATE)).astype(np.float32)
    cutter, got = WindowCutter(RATE, HOP, 3.0, 0.5), []
    for k in range(0, len(wave), block):
        got += cutter.push(wave[k : k + block])
    got += cutter.finish()
    starts = window_starts(len(wave), RATE, HOP, 3.0, 0.5)
    assert [w.start for w in got] == starts
    assert [w.last for w in got] == [False] * (len(starts) - 1) + [True]
    chunk = int(3.0 * RATE)
    for w in got:
        np.testing.assert_array_equal(w.samples, wave[w.start : w.start + chunk])
    assert len(cutter.held[0]) <= chunk + block if cutter.held else True  # never more than a window and a block


def test_stitched_frames_as_they_come_are_stitch_of_all():
    rng = np.random.default_rng(2)
    starts = window_starts(12 * RATE, RATE, HOP, 3.0, 0.5)
    logits = [rng.standard_normal((150 if i < len(starts) - 1 else 90, 5)).astype(np.float32)
              for i, _ in enumerate(starts)]
    stitcher, pieces, frame = Stitcher(HOP, 0.5 * RATE), [], 0
    for i, (x, s) in enumerate(zip(logits, starts)):
        first, kept = stitcher.push(x, s, i == len(starts) - 1)
        assert first == frame
        frame += len(kept)
        pieces.append(kept)
    np.testing.assert_array_equal(np.concatenate(pieces), stitch(logits, starts, HOP, 0.5 * RATE))


@pytest.mark.parametrize("vocab", [VOCAB, Vocabulary(("<blk>", "▁the", "▁ca", "t", "s", "▁a", "<unk>"), 0, "▁")])
def test_greedy_words_in_pieces_are_decode_of_the_whole(vocab):
    rng = np.random.default_rng(3)
    for trial in range(30):
        ids = rng.choice(len(vocab), size=int(rng.integers(0, 300)), p=None)
        logits = np.full((len(ids), len(vocab)), -5.0, np.float32)
        logits[np.arange(len(ids)), ids] = 5.0
        greedy, words, k = GreedyWords(vocab, 0.02), [], 0
        while k < len(ids):
            n = int(rng.integers(1, 40))
            words += greedy.push(logits[k : k + n], k)
            k += n
        words += greedy.finish()
        assert " ".join(w["word"] for w in words) == vocab.decode(ids)
        assert all(0 <= w["start"] < w["end"] <= len(ids) * 0.02 + 1e-9 for w in words)
        assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


def test_beam_words_streamed_and_pruned_equal_one_decode(tmp_path):
    from tiffin.ctc_beam import BeamDecoder, BeamOptions

    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "DOG", "RAN"]
    (tmp_path / "words.txt").write_text("\n".join(words))
    rng = np.random.default_rng(4)
    said = [words[i] for i in rng.integers(0, len(words), 120)]
    silence = np.zeros((25, len(VOCAB)), np.float32)
    silence[:, VOCAB.index["<pad>"]] = 6.0
    logits = np.concatenate([np.concatenate([frames(spell(w)), frames(["|"]), silence]) for w in said])
    beam = BeamDecoder(VOCAB, BeamOptions(words=tmp_path / "words.txt"))
    whole = beam.words(logits, 0.02)
    stream, got, k = beam.stream(0.02, look_back_seconds=1.0), [], 0  # 50 frames back: pruned many times
    while k < len(logits):
        got += stream.push(logits[k : k + 137], k)
        k += 137
    got += stream.finish()
    assert [w["word"] for w in whole] == said
    assert got == whole


def test_silence_is_a_level_and_skipping_keeps_the_frames_blank():
    assert silence_threshold({}) == -60.0 and silence_threshold({"TIFFIN_SILENCE_DBFS": "off"}) is None
    with pytest.raises(TiffinError, match="TIFFIN_SILENCE_DBFS"):
        silence_threshold({"TIFFIN_SILENCE_DBFS": "loud"})
    quiet = np.full(RATE, 10 ** (-70 / 20), np.float32)
    assert is_silent(quiet, RATE, -60) and not is_silent(quiet, RATE, -75)
    blip = quiet.copy()
    blip[8000:8100] = 0.05  # 6 ms of sound in a second of silence
    assert not is_silent(blip, RATE, -60)

    calls = []

    def logits(waves):  # a model that says "A A A ..." wherever it is asked
        calls.append(len(waves))
        said = np.eye(len(VOCAB), dtype=np.float32)[[VOCAB.index["A"], VOCAB.index["|"]]]
        return [np.tile(said, ((len(w) - 400) // 320 // 2 + 1, 1)) for w in waves]

    run = Transcription(logits, VOCAB, RATE, (400,), (320,), 3.0, 0.5, silence_dbfs=-60.0)
    wave = np.concatenate([np.full(RATE, 0.1, np.float32), np.zeros(20 * RATE, np.float32),
                           np.full(RATE, 0.1, np.float32)])
    segments = [s for k in range(0, len(wave), 4000) for s in run.push(wave[k : k + 4000])] + run.finish()
    assert run.skipped > 0 and sum(calls) == run.windows - run.skipped
    # skipped windows are blank: words only in the windows that ran (the first two, the last two)
    starts = [w["start"] for s in segments for w in s.words]
    assert starts and all(t < 5.0 or t > 22 - 5.0 for t in starts), starts
    assert any(t < 1.0 for t in starts) and any(t > 21.0 for t in starts)


def test_partials_read_ahead_on_two_strides_of_audio_not_the_whole_window():
    calls = []

    def logits(waves):  # a model that says "A A A ..." wherever it is asked
        calls.append(len(waves[0]))
        said = np.eye(len(VOCAB), dtype=np.float32)[[VOCAB.index["A"], VOCAB.index["|"]]]
        return [np.tile(said, ((len(w) - 400) // 320 // 2 + 1, 1))[: (len(w) - 400) // 320 + 1] for w in waves]

    run = Transcription(logits, VOCAB, RATE, (400,), (320,), 30.0, 5.0, windows_per_call=1)
    texts = []
    for second in range(25):  # less than a window: nothing committed, every word is a partial's
        assert run.push(np.full(RATE, 0.1, np.float32)) == []
        texts.append(run.partial())
    assert max(calls[-10:]) <= 2 * 5 * RATE + RATE + 320, calls  # two strides and the new second
    words = [len(t.split()) for t in texts]
    assert words == sorted(words) and words[-1] >= 25 * 50 // 2 - 10  # the read-ahead keeps what it read
    final = [w for s in run.finish() for w in s.words]
    assert len(final) >= words[-1] - 2
