"""tiffin.ctc_beam: beam search over a word list and a KenLM model, on logits built by hand."""

from __future__ import annotations

import pytest

from tests.helpers import VOCAB, frames, spell
from tiffin.ctc_beam import BeamDecoder, BeamOptions, arpa_unigrams, read_words
from tiffin.errors import TiffinError


def test_the_lexicon_turns_a_misspelling_into_its_word(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("cat\ndog\nsat\nthe\n")
    # "CAT" whose vowel sounds slightly more like U: greedy spells CUT, which is no word
    logits = frames(spell("THE", "CAT", ambiguous={5: {"A": 4.0, "U": 4.5}}))
    assert VOCAB.decode_logits(logits) == "THE CUT"
    assert BeamDecoder(VOCAB, BeamOptions(words=words)).decode(logits) == "THE CAT"


def test_a_language_model_sentence_beats_an_acoustically_close_non_sentence(tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\n".join([
        "\\data\\", "ngram 1=7", "ngram 2=4", "", "\\1-grams:",
        "-1.0\t<s>\t-0.3", "-1.0\t</s>", "-1.0\tTHE\t-0.3", "-2.0\tCAT\t-0.3", "-2.0\tCAP\t-0.3",
        "-1.5\tSAT\t-0.3", "-3.0\t<unk>", "", "\\2-grams:",
        "-0.1\t<s> THE", "-0.1\tTHE CAT", "-0.1\tCAT SAT", "-0.1\tSAT </s>", "", "\\end\\", ""]))
    # the acoustics lean to CAP (the last letter P a little over T): "THE CAP SAT" is no sentence
    logits = frames(spell("THE", "CAT", "SAT", ambiguous={6: {"T": 4.0, "P": 4.4}}))
    assert VOCAB.decode_logits(logits) == "THE CAP SAT"
    assert sorted(arpa_unigrams(arpa)) == ["CAP", "CAT", "SAT", "THE"]
    no_lm = BeamDecoder(VOCAB, BeamOptions(words=_words(tmp_path, "THE CAT CAP SAT")))
    assert no_lm.decode(logits) == "THE CAP SAT"  # every word is in the lexicon: acoustics decide
    with_lm = BeamDecoder(VOCAB, BeamOptions(lm=arpa))  # the LM's unigrams are the lexicon
    assert with_lm.decode(logits) == "THE CAT SAT"


def _words(tmp_path, text: str):
    path = tmp_path / "w.txt"
    path.write_text("\n".join(text.split()))
    return path


def test_word_timestamps_cover_each_words_frames(tmp_path):
    logits = frames(spell("THE", "CAT"))  # T H E | C A T, each a frame and a blank after: 14 frames
    words = BeamDecoder(VOCAB, BeamOptions(words=_words(tmp_path, "THE CAT"))).words(logits, 0.02)
    # THE: T at frame 0 .. E at frame 4 (ends with frame 4, at 0.10 s); CAT: C at frame 8 .. T at frame 12
    assert words == [{"word": "THE", "start": 0.0, "end": 0.1}, {"word": "CAT", "start": 0.16, "end": 0.26}]
    ends = [w["end"] for w in words]
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:])) and max(ends) <= len(logits) * 0.02


def test_bad_word_lists_and_models_are_one_line_errors(tmp_path):
    with pytest.raises(TiffinError, match="--words .*no such file"):
        BeamDecoder(VOCAB, BeamOptions(words=tmp_path / "missing.txt"))
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(TiffinError, match="not UTF-8"):
        read_words(tmp_path / "latin.txt", VOCAB)
    (tmp_path / "greek.txt").write_text("λόγος\n")
    with pytest.raises(TiffinError, match="no word spelled"):
        read_words(tmp_path / "greek.txt", VOCAB)
    (tmp_path / "bad.arpa").write_text("not a model\n")
    with pytest.raises(TiffinError, match="--lm .*not a KenLM model"):
        BeamDecoder(VOCAB, BeamOptions(words=_words(tmp_path, "CAT"), lm=tmp_path / "bad.arpa"))
    with pytest.raises(TiffinError, match="give --words"):
        BeamDecoder(VOCAB, BeamOptions())
    words, dropped = read_words(_words(tmp_path, "cat dog λόγος"), VOCAB)
    assert words == ["CAT", "DOG"] and dropped == 1


def test_predict_and_evaluate_decode_in_words_from_an_artifact(artifacts, checkpoints, recordings, tmp_path):
    """`--decoder beam --words` through the CLI, on the ONNX artifact (torch-free host path): every
    transcript is made of the list's words, timestamps lie inside each recording in order, and
    evaluate scores the same transcripts."""
    import json

    from tests.helpers import tiffin
    from tests.speech_media import WORDS

    words = _words(tmp_path, " ".join(WORDS))
    got = tiffin("predict", artifacts["speech"], *recordings, "--decoder", "beam", "--words", words, "--json",
                 "--timestamps")
    assert got.exit_code == 0, got.output
    for result in json.loads(got.stdout):
        spoken = result["text"].split()
        assert set(spoken) <= {w.upper() for w in WORDS}, result
        assert [w["word"] for w in result["words"]] == spoken
        times = [t for w in result["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times) and all(0 <= t <= result["duration_s"] + 0.02 for t in times)
    corpus = checkpoints["clips"].parent / "train.csv"
    scores = json.loads(tiffin("evaluate", artifacts["speech"], corpus, "--decoder", "beam", "--words", words).stdout)
    # evaluate scores exactly the beam transcripts predict gives for the CSV's files
    from tiffin.ctc import error_rates
    from tiffin.train.speech_files import read_table

    rows = read_table(corpus, "speech_files", "targets", "DATA")
    texts = json.loads(tiffin("predict", artifacts["speech"], *[r.path for r in rows], "--decoder", "beam",
                              "--words", words, "--json").stdout)
    wer, cer = error_rates([VOCAB.normalise(r.text).text for r in rows], [t["text"] for t in texts])
    assert scores["utterances"] == 8 and (scores["wer"], scores["cer"]) == (round(wer, 4), round(cer, 4))
    greedy_words = tiffin("predict", artifacts["speech"], recordings[0], "--decoder", "greedy", "--words", words)
    assert greedy_words.exit_code == 2 and "--decoder beam" in greedy_words.output
    implied = tiffin("predict", artifacts["speech"], *recordings, "--words", words, "--json")  # auto: a list -> beam
    assert [r["text"] for r in json.loads(implied.stdout)] == [r["text"] for r in json.loads(got.stdout)]
    video = tiffin("predict", artifacts["video"], recordings[0], "--decoder", "beam", "--words", words)
    assert video.exit_code == 2 and "video model" in video.output


def test_tune_finds_the_settings_evaluate_then_scores_alike(artifacts, checkpoints, tmp_path):
    """`tiffin evaluate --tune` searches word_score (and lm_weight with an LM) on a dev set: its
    best point is no worse than the given settings, and evaluate with the chosen settings
    reproduces its score exactly (the model ran once, decoding repeated)."""
    import json

    from tests.helpers import tiffin
    from tests.speech_media import WORDS
    from tiffin.ngram import build
    from tiffin.train.evaluate import TUNE_GRID

    corpus = checkpoints["clips"].parent / "train.csv"
    words = _words(tmp_path, " ".join(WORDS))
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[i:i + 4]) for i in range(len(WORDS) - 3)) + "\n")
    lm = build(text, tmp_path / "lm")["lm"]
    for extra, points in (((), len(TUNE_GRID["word_score"])),
                          (("--lm", lm), len(TUNE_GRID["word_score"]) * len(TUNE_GRID["lm_weight"]))):
        got = tiffin("evaluate", artifacts["speech"], corpus, "--decoder", "beam", "--words", words, *extra, "--tune")
        assert got.exit_code == 0, got.output
        tuned = json.loads(got.stdout.splitlines()[0])
        assert len(tuned["grid"]) == points and tuned["utterances"] == 8
        assert tuned["wer"] == min(p["wer"] for p in tuned["grid"]) <= tuned["given"]["wer"]
        assert len({(p["wer"], p["cer"]) for p in tuned["grid"]}) > 1  # the settings reach the decoder
        best = tuned["tuned"]
        again = json.loads(tiffin("evaluate", artifacts["speech"], corpus, "--decoder", "beam", "--words", words,
                                  *extra, "--lm-weight", str(best["lm_weight"]), "--word-score",
                                  str(best["word_score"])).stdout)
        assert (again["wer"], again["cer"]) == (tuned["wer"], tuned["cer"])
    alone = tiffin("evaluate", artifacts["speech"], corpus, "--tune")
    assert alone.exit_code == 2 and "--tune: give --decoder beam" in alone.output
    # `tiffin export --tune-on DEV` records the settings evaluate --tune chooses for the checkpoint,
    # not the given ones (a word score so high that short words flood in: WER far above 1)
    given = ("--word-score", "5")
    chosen = json.loads(tiffin("evaluate", checkpoints["speech"], corpus, "--decoder", "beam", "--words", words,
                               "--lm", lm, *given, "--tune").stdout.splitlines()[0])
    assert chosen["given"]["word_score"] == 5 and chosen["given"]["wer"] > 1 and chosen["tuned"]["word_score"] != 5
    exported = tiffin("export", checkpoints["speech"], "--words", words, "--lm", lm, *given, "--tune-on", corpus,
                      "--out", tmp_path / "tuned")
    assert exported.exit_code == 0, exported.output
    decoder = json.loads((tmp_path / "tuned" / "tiffin.json").read_text())["decoder"]
    assert {k: decoder[k] for k in ("lm_weight", "word_score")} == chosen["tuned"]
    assert decoder["tuned_on"] == {"data": corpus.name, "utterances": 8, "wer": chosen["wer"],
                                   "given_wer": chosen["given"]["wer"]}
    untuned = tiffin("export", checkpoints["speech"], "--tune-on", corpus, "--out", tmp_path / "none")
    assert untuned.exit_code == 2 and "--tune-on: give --words" in untuned.output
    assert not (tmp_path / "none").exists()


def test_an_artifact_carries_its_word_list_and_decodes_with_it(checkpoints, recordings, tmp_path, monkeypatch):
    """`tiffin export --words`: the list is copied in and hashed; the artifact, moved elsewhere,
    still decodes in words (predict and the service alike); a changed list is refused."""
    import json
    import shutil

    from tests.helpers import tiffin
    from tests.speech_media import WORDS
    from tiffin.artifact_json import sha256

    words = _words(tmp_path, " ".join(WORDS))
    out = tmp_path / "a"
    exported = tiffin("export", checkpoints["speech"], "--out", out, "--words", words, "--beam-width", "20", "--json")
    assert exported.exit_code == 0, exported.output
    decoder = json.loads(exported.stdout)["decoder"]
    assert decoder["words"] == {"file": "words.txt", "sha256": sha256(words)} and decoder["beam_width"] == 20
    moved = tmp_path / "elsewhere" / "artifact"
    moved.parent.mkdir()
    shutil.move(out, moved)
    words.unlink()  # the artifact needs nothing outside itself
    beam = json.loads(tiffin("predict", moved, *recordings, "--json", "--timestamps").stdout)
    for result in beam:
        assert set(result["text"].split()) <= {w.upper() for w in WORDS}
        assert [w["word"] for w in result["words"]] == result["text"].split()
    again = _words(tmp_path, " ".join(WORDS))
    from_checkpoint = json.loads(tiffin("predict", checkpoints["speech"], *recordings, "--json", "--decoder", "beam",
                                        "--words", again, "--beam-width", "20").stdout)
    assert [r["text"] for r in beam] == [r["text"] for r in from_checkpoint]
    greedy = json.loads(tiffin("predict", moved, *recordings, "--json", "--decoder", "greedy").stdout)
    assert [r["text"] for r in greedy] == [r["text"] for r in json.loads(
        tiffin("predict", checkpoints["speech"], *recordings, "--json").stdout)]

    monkeypatch.setenv("TIFFIN_ARTIFACT", str(moved))
    from tiffin.serve.speech import SpeechRecognizer

    served = SpeechRecognizer()
    for file, want in zip(recordings, beam):
        got = served.transcribe(file, timestamps=True)
        assert (got["text"], got["words"]) == (want["text"], want["words"])

    from tiffin.serve.commands import BENTOFILE, bento_options  # a bento of it runs the decoder too

    meta = json.loads((moved / "tiffin.json").read_text())
    context = tmp_path / "context"
    context.mkdir()
    packages = bento_options(BENTOFILE, meta, "m:1", "m", False, context)["python"]["packages"]
    assert any(p.startswith("flashlight-text==") for p in packages) and any(p.startswith("onnxruntime==") for p in packages)

    (moved / "words.txt").write_text("cat\n")
    refused = tiffin("predict", moved, recordings[0])
    assert refused.exit_code == 2 and "words.txt" in refused.output and "changed since export" in refused.output

    arpa = tmp_path / "lm.arpa"  # an LM alone: its unigrams are the list; binary or text, named by its kind
    arpa.write_text("\n".join(["\\data\\", "ngram 1=5", "ngram 2=1", "", "\\1-grams:", "-1.0\t<s>\t-0.3",
                               "-1.0\t</s>", "-1.0\tRED\t-0.3", "-1.0\tCAT", "-3.0\t<unk>", "", "\\2-grams:",
                               "-0.1\tRED CAT", "", "\\end\\", ""]))
    with_lm = tiffin("export", checkpoints["speech"], "--out", tmp_path / "b", "--lm", arpa, "--json")
    assert with_lm.exit_code == 0, with_lm.output
    assert json.loads(with_lm.stdout)["decoder"]["lm"] == {"file": "lm.arpa", "sha256": sha256(arpa)}
    texts = [r["text"] for r in json.loads(tiffin("predict", tmp_path / "b", *recordings, "--json").stdout)]
    assert all(set(t.split()) <= {"RED", "CAT"} for t in texts)
    video = tiffin("export", checkpoints["video"], "--out", tmp_path / "v", "--words", again)
    assert video.exit_code == 2 and "video model" in video.output and not (tmp_path / "v").exists()


def test_hotwords_change_the_output_and_can_be_words_the_list_lacks(tmp_path):
    words = _words(tmp_path, "THE CAT CAP SAT")
    logits = frames(spell("THE", "CAT", "SAT", ambiguous={6: {"T": 4.0, "P": 4.4}}))
    assert BeamDecoder(VOCAB, BeamOptions(words=words)).decode(logits) == "THE CAP SAT"
    assert BeamDecoder(VOCAB, BeamOptions(words=words, hotwords=("cat",))).decode(logits) == "THE CAT SAT"
    assert BeamDecoder(VOCAB, BeamOptions(words=words, hotwords=("cat",), hotword_weight=0.0)).decode(logits) \
        == "THE CAP SAT"  # no weight, no change
    # a hotword missing from the list joins the lexicon: "THE CAB SAT" can now be said
    near_b = frames(spell("THE", "CAB", "SAT", ambiguous={6: {"B": 4.0, "P": 4.4}}))
    assert BeamDecoder(VOCAB, BeamOptions(words=words, hotwords=("cab",))).decode(near_b) == "THE CAB SAT"
    with pytest.raises(TiffinError, match="--hotword"):
        BeamDecoder(VOCAB, BeamOptions(words=words, hotwords=("two words",)))


def test_hotwords_from_the_cli_and_in_an_artifact(artifacts, checkpoints, recordings, tmp_path):
    import json

    from tests.helpers import tiffin
    from tests.speech_media import WORDS

    words = _words(tmp_path, " ".join(WORDS))

    def reds(*options) -> int:
        got = tiffin("predict", artifacts["speech"], *recordings, "--decoder", "beam", "--words", words, "--json",
                     *options)
        assert got.exit_code == 0, got.output
        return sum(r["text"].split().count("RED") for r in json.loads(got.stdout))

    assert reds("--hotword", "red", "--hotword-weight", "30") > reds()
    out = tmp_path / "hot"
    exported = tiffin("export", checkpoints["speech"], "--out", out, "--words", words, "--hotword", "red", "--json")
    assert exported.exit_code == 0, exported.output
    meta = json.loads(exported.stdout)
    decoder, parity = meta["decoder"], meta["parity"]
    assert decoder["hotwords"] == ["red"] and decoder["hotword_weight"] == 5.0
    # the parity gate scores the beam transcripts too, at export and in `tiffin check`
    assert 0 <= parity["beam_transcript_cer"] <= parity["tolerance"]["max_cer"]
    checked = tiffin("check", out)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["beam_transcript_cer"] == parity["beam_transcript_cer"]
    from tiffin.ctc_beam import options_of

    assert options_of(out, decoder).hotwords == ("red",)
    alone = tiffin("predict", artifacts["speech"], recordings[0], "--hotword", "red")
    assert alone.exit_code == 2 and "--hotword" in alone.output
