"""Beam-search CTC decoding over a lexicon, with an optional KenLM n-gram model: transcripts in words.

Torch-free: flashlight-text (BSD; the decoder behind torchaudio's `ctc_decoder`, KenLM
bundled in its wheel, no numpy pin) searches the logits of any runtime. A word list restricts
the output to its words, each spelled in the model's vocabulary: characters ended by the word
delimiter `|`; word pieces (Parakeet's SentencePiece tokens) as the model's tokenizer spells
them, "▁" piece first (tiffin.ctc.Vocabulary.spellings: its BPE spelling and other fewest-piece
ones), with the blank as the silence between words (fairseq's convention for piece lexicons) and
each spelling also with its last piece doubled (the decoder's way through a last piece that lasts
more than one frame);
a KenLM model (ARPA or binary) scores word sequences, weighted by `lm_weight`, with
`word_score` added per word. Without a word list the LM's unigrams are the lexicon.
pyctcdecode, which Hugging Face's Wav2Vec2ProcessorWithLM uses, was the other candidate: its
latest release (0.5.0) requires numpy < 2, which the rest of tiffin's stack (onnxruntime
1.32, numpy 2.4) does not run with.

Run: `tiffin predict MODEL FILE --decoder beam --words words.txt [--lm lm.arpa]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tiffin.errors import TiffinError

if TYPE_CHECKING:  # the CLI reads DECODERS: no numpy import for `tiffin --help`
    import numpy as np

    from tiffin.ctc import Vocabulary

# auto: an artifact's recorded decoder (`tiffin export --words/--lm`), else greedy
DECODERS = ("auto", "greedy", "beam")


@dataclass(frozen=True)
class BeamOptions:
    """The decoder's settings (`tiffin predict --decoder beam ...`)."""

    words: Path | None = None  # one word a line (anything after the first column is ignored)
    lm: Path | None = None  # KenLM model, ARPA text or binary
    beam_width: int = 50
    lm_weight: float = 2.0
    word_score: float = 0.0
    # CTC frames whose best token is far below the best path's are pruned
    beam_threshold: float = 25.0
    hotwords: tuple[str, ...] = ()  # words to favour (added to the lexicon when missing)
    hotword_weight: float = 5.0  # log-score added each time a hotword is chosen
    # where lm_weight / word_score came from when tuned (`tiffin export --tune-on DEV`): recorded only
    tuned_on: dict[str, Any] | None = None


# the files a decoder brings into an artifact, under fixed names (never a path from tiffin.json)
DECODER_FILES = {"words": "words.txt", "lm": "lm.arpa", "lm-binary": "lm.bin"}


def decoder_choice(decoder: str = "auto", words: str | Path | None = None, lm: str | Path | None = None,
                   beam_width: int = 50, lm_weight: float = 2.0, word_score: float = 0.0,
                   hotwords: Sequence[str] = (), hotword_weight: float = 5.0):
    """What `--decoder` and its options ask for: BeamOptions for beam search ("beam", or "auto"
    with a word list or LM), "greedy", or None ("auto" alone: the artifact's recorded decoder,
    else greedy); the form tiffin.train.predict.with_decoder takes.

    Raises:
        TiffinError: an unknown decoder, or a word list / LM given with "greedy".
    """
    if decoder not in DECODERS:
        raise TiffinError(f"--decoder {decoder}: choose one of {', '.join(DECODERS)}")
    if decoder == "greedy":
        if words is not None or lm is not None or hotwords:
            raise TiffinError("--words/--lm/--hotword: give them with --decoder beam")
        return "greedy"
    if decoder == "auto" and words is None and lm is None:
        if hotwords:
            raise TiffinError("--hotword: give it with --words or --lm (beam search over a word list)")
        return None
    return BeamOptions(words=Path(words) if words is not None else None, lm=Path(lm) if lm is not None else None,
                       beam_width=beam_width, lm_weight=lm_weight, word_score=word_score,
                       hotwords=tuple(hotwords), hotword_weight=hotword_weight)


def describe(options: BeamOptions, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """tiffin.json's `decoder` (tiffin.artifact_schema.Decoder): the settings and, per file, its
    name in the artifact and sha256; returned for the export to write (tiffin.artifact_json.write_meta)."""
    return {"kind": "beam", "beam_width": options.beam_width, "lm_weight": options.lm_weight,
            "word_score": options.word_score, "beam_threshold": options.beam_threshold,
            "hotwords": list(options.hotwords), "hotword_weight": options.hotword_weight,
            **({"tuned_on": options.tuned_on} if options.tuned_on else {}),
            **{key: {"file": name, "sha256": digest} for key, (name, digest) in files.items()}}


def options_of(folder: Path, decoder: dict[str, Any]) -> BeamOptions:
    """The BeamOptions of an artifact's recorded decoder (`describe`'s output, read back), its
    files inside `folder`; absent keys take tiffin.artifact_schema.Decoder's defaults."""
    words, lm = decoder.get("words"), decoder.get("lm")
    return BeamOptions(words=Path(folder) / words["file"] if words else None,
                       lm=Path(folder) / lm["file"] if lm else None, beam_width=decoder["beam_width"],
                       lm_weight=decoder["lm_weight"], word_score=decoder["word_score"],
                       beam_threshold=decoder["beam_threshold"], hotwords=tuple(decoder.get("hotwords", ())),
                       hotword_weight=decoder.get("hotword_weight", 0.0))


def lm_file_name(path: Path) -> str:
    """The name an LM file takes in an artifact: lm.arpa for ARPA text, lm.bin for KenLM binary."""
    return DECODER_FILES["lm"] if _is_arpa(path) else DECODER_FILES["lm-binary"]


def read_words(path: Path, vocab: Vocabulary, option: str = "--words") -> tuple[list[str], int]:
    """(the words of a word list spelled in `vocab`'s characters, how many were dropped)."""
    from tiffin.text_file import read_lines

    lines = read_lines(path, option, "one word a line")
    words, dropped = {}, 0
    for line in lines:
        token = line.split()[0] if line.split() else ""
        if not token:
            continue
        spelled = vocab.normalise(token).text
        if not spelled or " " in spelled or len(spelled) != len(token.replace("’", "'")):
            dropped += 1  # characters the model cannot spell
            continue
        words.setdefault(spelled, None)
    if not words:
        raise TiffinError(f"{option} {path}: no word spelled in the model's characters ({dropped} dropped)")
    return list(words), dropped


def arpa_unigrams(path: Path) -> list[str]:
    """The words of an ARPA model's 1-gram section (a lexicon when no word list is given)."""
    words, inside = [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\1-grams:"):
                inside = True
            elif line.startswith("\\"):
                if inside:
                    break
            elif inside and line:
                parts = line.split()
                if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                    words.append(parts[1])
    return words


class BeamDecoder:
    """Logits [frames, vocab] -> the best word sequence under the lexicon (and LM)."""

    def __init__(self, vocab: Vocabulary, options: BeamOptions):
        try:
            from flashlight.lib.text.decoder import (
                CriterionType, LexiconDecoder, LexiconDecoderOptions, SmearingMode, Trie, ZeroLM,
            )
            from flashlight.lib.text.dictionary import Dictionary
        except ImportError:
            raise TiffinError("--decoder beam needs flashlight-text: pip install 'tiffin[lm]'") from None
        if options.beam_width < 1:
            raise TiffinError(f"--beam-width {options.beam_width}: give a positive width")
        self.vocab, self.options = vocab, options
        if options.words is not None:
            words, self.dropped = read_words(options.words, vocab)
        elif options.lm is not None and _is_arpa(options.lm):
            words = [w for w in (vocab.normalise(w).text for w in arpa_unigrams(options.lm)) if w and " " not in w]
            self.dropped = 0
        else:
            raise TiffinError("--decoder beam: give --words FILE (and --lm FILE for a language model; a binary "
                              "KenLM model needs --words too)")
        hot = []
        for word in options.hotwords:
            spelled = vocab.normalise(word).text
            if not spelled or " " in spelled:
                raise TiffinError(f"--hotword {word!r}: one word in the model's characters, please")
            hot.append(spelled)
        words = list(dict.fromkeys([*words, *hot]))  # a hotword the list lacks can still be said
        tokens = Dictionary(list(vocab.tokens))
        if vocab.pieces:
            # each word in the pieces the model may spell it in, with no delimiter after it. The decoder
            # leaves a word at its last piece's first frame, and between words it stays on the silence
            # (here the blank), not on that piece: each spelling is also given with its last piece
            # twice, the way to the word when that piece lasts more than a frame
            lexicon = {w: [[vocab.tokens[i] for i in spelt + spelt[-1:] * extra]
                           for spelt in vocab.spellings(w) for extra in (0, 1)] for w in words}
        else:
            delimiter = vocab.tokens[vocab.index["|"]] if "|" in vocab.index else " "
            lexicon = {w: [list(w) + [delimiter]] for w in words}
        self.word_dict = Dictionary()
        for entry in ("<unk>", "<s>", "</s>", *lexicon):  # KenLM looks its sentence markers up here
            self.word_dict.add_entry(entry)
        self.word_dict.set_default_index(self.word_dict.get_index("<unk>"))
        if options.lm is not None and options.words is not None and _is_arpa(options.lm):
            in_lm = set(arpa_unigrams(options.lm))
            if in_lm and not in_lm & set(words):
                raise TiffinError(f"--lm {options.lm}: none of the word list's words is in the LM; KenLM matches "
                                  f"exact spellings, and this model spells {words[0]!r} (tiffin lm --case)")
        lm = self._language_model(options.lm) if options.lm is not None else ZeroLM()
        # the decoder multiplies LM scores by the LM weight: without an LM that weight is 1 for hotwords
        lm_weight = options.lm_weight if options.lm is not None else (1.0 if hot else 0.0)
        if hot:
            bonus = options.hotword_weight / (lm_weight or 1.0)
            lm = _HotwordLM(lm, {self.word_dict.get_index(w): bonus for w in hot})
        blank = vocab.blank_id
        silence = blank if vocab.pieces else tokens.get_index(delimiter)
        trie = Trie(tokens.index_size(), silence)
        start = lm.start(False)
        for word, spellings in lexicon.items():
            index = self.word_dict.get_index(word)
            _, score = lm.score(start, index)
            for spelling in spellings:
                trie.insert([vocab.index[t] for t in spelling] if vocab.pieces else
                            [tokens.get_index(t) for t in spelling], index, score)
        trie.smear(SmearingMode.MAX)
        settings = LexiconDecoderOptions(options.beam_width, len(vocab), options.beam_threshold,
                                         lm_weight, options.word_score,
                                         -math.inf, 0.0, False, CriterionType.CTC)
        self._lm = lm  # the decoder holds a reference only: keep the object alive
        self.decoder = LexiconDecoder(settings, trie, lm, silence, blank, self.word_dict.get_index("<unk>"), [],
                                      False)
        self.silence, self.blank = silence, blank

    def _language_model(self, path: Path):
        from flashlight.lib.text.decoder.kenlm import KenLM

        if not Path(path).is_file():
            raise TiffinError(f"--lm {path}: no such file; give a KenLM model (ARPA or binary)")
        try:
            with _quiet_stderr():  # KenLM writes a loading banner and progress bar to fd 2
                return KenLM(str(path), self.word_dict)
        except Exception as exc:  # KenLM raises RuntimeError subclasses: source location, then the reason
            text = str(exc)
            reason = text.split("Exception.", 1)[-1].strip().split(" Byte:")[0].splitlines()[0][:200]
            raise TiffinError(f"--lm {path}: not a KenLM model KenLM reads ({reason})") from None

    def _log_probs(self, logits: np.ndarray) -> np.ndarray:
        import numpy as np

        z = np.asarray(logits, dtype=np.float32)
        z = z - z.max(axis=-1, keepdims=True)
        return np.ascontiguousarray(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)), dtype=np.float32)

    def _best(self, logits: np.ndarray):
        log_probs = self._log_probs(logits)
        frames, size = log_probs.shape
        if frames == 0:
            return None
        return self.decoder.decode(log_probs.ctypes.data, frames, size)[0]

    def decode(self, logits: np.ndarray) -> str:
        """The transcript, words joined by spaces (upper case for base-960h's vocabulary)."""
        return " ".join(w["word"] for w in self.words(logits, 1.0))

    def words(self, logits: np.ndarray, seconds_per_frame: float) -> list[dict[str, Any]]:
        """`[{"word", "start", "end"}]`: each word from its first letter's frame to the end of its
        last letter's, in seconds from the start of `logits`."""
        best = self._best(logits)
        if best is None:
            return []
        walk = _PathWords(self, seconds_per_frame)
        # the decoder pads the path with a start and an end step
        return walk.feed(list(best.tokens)[1:-1], list(best.words)[1:-1], 0) + walk.finish()

    def stream(self, seconds_per_frame: float, look_back_seconds: float = 4.0) -> "_BeamWords":
        """An incremental decoder over frames given in order (tiffin.speech_stream): flashlight's
        decode_step per batch of frames; once more than twice `look_back_seconds` of frames wait,
        the best path up to a word boundary about `look_back_seconds` back is committed and the
        rest of the beam pruned to it, so memory stays bounded whatever the recording's length."""
        return _BeamWords(self, seconds_per_frame, max(1, round(look_back_seconds / seconds_per_frame)))


class _PathWords:
    """Words and their spans along a decoder path given in pieces (token and word id per frame).

    A word id is given where the lexicon completes it; its span runs from its first letter's frame
    to its last letter's (characters: up to the `|`; word pieces: up to the next word's start), and
    the k-th word goes with the k-th span."""

    def __init__(self, beam: BeamDecoder, seconds_per_frame: float):
        self.beam, self.spf = beam, seconds_per_frame
        self.ready_words: list[str] = []
        self.spans: list[tuple[int, int]] = []
        self.start = self.last = self.previous = None
        self.starts = 0  # word pieces: word starts since the last word given

    def feed(self, tokens: list[int], words: list[int], first_frame: int, continued: bool = False
             ) -> list[dict[str, Any]]:
        """`continued`: the path goes on from a pruned one (BeamDecoder.stream). Pruning keeps every
        hypothesis at the cut, so the best path may go on from one that had not finished the word
        the committed path just gave; a word given before any letter of this piece of the path is
        that word again, and is dropped."""
        vocab, entry = self.beam.vocab, self.beam.word_dict.get_entry
        pieces, silent, mark = vocab.pieces, vocab.silent, vocab.word_start
        lettered = not continued
        for k, (token, word) in enumerate(zip(tokens, words)):
            t = first_frame + k
            if word >= 0 and not lettered and self.start is None:
                word = -1  # the committed path's last word, finished again
            if pieces:
                spoken = 0 <= token < len(vocab.tokens) and token not in silent
                if spoken and vocab.tokens[token].startswith(mark) and token != self.previous:
                    # a doubled last piece (see BeamDecoder) also reads "x <blank> x" as one word: each
                    # word is given once per word start on its way, so a word said twice stays twice
                    self.starts += 1
                    if self.start is not None:
                        self.spans.append((self.start, self.last))
                        self.start = None
                if spoken:
                    self.start = t if self.start is None else self.start
                    self.last, lettered = t, True
                self.previous = token
                if word >= 0:
                    self.ready_words += [entry(word)] * max(1, self.starts)
                    self.starts = 0
            else:
                if token == self.beam.silence:
                    if self.start is not None:
                        self.spans.append((self.start, self.last))
                    self.start = None
                elif token != self.beam.blank:
                    self.start = t if self.start is None else self.start
                    self.last, lettered = t, True
                if word >= 0:
                    self.ready_words.append(entry(word))
        return self._paired()

    def finish(self) -> list[dict[str, Any]]:
        if self.start is not None:
            self.spans.append((self.start, self.last))
            self.start = None
        out = self._paired()
        end = self.spans[-1][1] if self.spans else 0
        # a word without a span of its own (the path ended in it): at the last letter
        out += [self._word(w, (end, end)) for w in self.ready_words]
        self.ready_words, self.spans = [], []
        return out

    def _paired(self) -> list[dict[str, Any]]:
        n = min(len(self.ready_words), len(self.spans))
        out = [self._word(w, span) for w, span in zip(self.ready_words[:n], self.spans[:n])]
        self.ready_words, self.spans = self.ready_words[n:], self.spans[n:]
        return out

    def _word(self, word: str, span: tuple[int, int]) -> dict[str, Any]:
        return {"word": word, "start": round(span[0] * self.spf, 3), "end": round((span[1] + 1) * self.spf, 3)}


class _BeamWords:
    """BeamDecoder.stream's state: frames in, committed words out (tiffin.speech_stream's decoder)."""

    def __init__(self, beam: BeamDecoder, seconds_per_frame: float, look_back: int):
        self.beam, self.look_back = beam, look_back
        self.path = _PathWords(beam, seconds_per_frame)
        self.offset = 0  # recording frame of the decoder buffer's first frame
        self.buffered = 0  # frames decoded since the last prune
        beam.decoder.decode_begin()

    def push(self, logits: np.ndarray, first_frame: int) -> list[dict[str, Any]]:
        log_probs = self.beam._log_probs(logits)
        frames, size = log_probs.shape if log_probs.ndim == 2 else (0, 0)
        if frames == 0:
            return []
        self.beam.decoder.decode_step(log_probs.ctypes.data, frames, size)
        self.buffered += frames
        if self.buffered <= 2 * self.look_back:
            return []
        best = self.beam.decoder.get_best_hypothesis(self.look_back)
        committed = len(best.tokens) - 1  # the best path back to a word boundary near look_back frames ago
        if committed <= 0:
            return []
        # the buffer's first step is where the previous commit stopped (or the start): given already
        out = self.path.feed(list(best.tokens)[1:], list(best.words)[1:], self.offset, continued=self.offset > 0)
        self.beam.decoder.prune(self.look_back)
        self.offset += committed
        self.buffered -= committed
        return out

    def finish(self) -> list[dict[str, Any]]:
        decoder = self.beam.decoder
        decoder.decode_end()
        hyps = decoder.get_all_final_hypothesis()
        out = []
        if hyps:
            best = max(hyps, key=lambda h: h.score)
            out = self.path.feed(list(best.tokens)[1:-1], list(best.words)[1:-1], self.offset,
                                 continued=self.offset > 0)
        return out + self.path.finish()


def _HotwordLM(base, bonus: dict[int, float]):
    """`base` (KenLM or the zero LM) with `bonus` added to the score of each hotword's index."""
    from flashlight.lib.text.decoder import LM

    class HotwordLM(LM):
        def __init__(self):
            LM.__init__(self)
            self.base, self.bonus = base, bonus

        def start(self, start_with_nothing):
            return self.base.start(start_with_nothing)

        def score(self, state, token_index):
            state, score = self.base.score(state, token_index)
            return state, score + self.bonus.get(token_index, 0.0)

        def finish(self, state):
            return self.base.finish(state)

    return HotwordLM()


class _quiet_stderr:
    """File descriptor 2 sent to /dev/null for the duration (C++ code writing there directly)."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self.saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        import os

        os.dup2(self.saved, 2)
        os.close(self.saved)


def _is_arpa(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(64).lstrip().startswith(b"\\data\\")
    except OSError:
        return False
