"""Speech inference on CPU: tiffin's artifacts vs `transformers.pipeline("automatic-speech-recognition")`.

A wav2vec2-base-sized CTC model (base-960h's architecture and vocabulary, randomly initialised:
no weights can be downloaded here) is saved with its tokenizer and feature extractor as a
Hugging Face folder. The peer is the transformers pipeline on that folder, eager fp32. tiffin
exports the same folder (ONNX fp32, ONNX int8, TorchScript bf16) through its parity gate and
transcribes with the code `tiffin predict` runs (tiffin.chunking windows, greedy CTC). Both get
the same 10 s of espeak-ng speech as a 16 kHz array; median of N warm calls, alternating.
Agreement: CER between each tiffin transcript and the peer's, and the share of frames whose
argmax token matches (random weights make transcripts meaningless as English, not as parity).

The ONNX fp32 artifact also runs on the runtime table's other rows (OpenVINO; OpenVINO's bf16
hint on a CPU with AMX or AVX-512 bf16), each behind the parity gate.

Served, side by side (`--serve-seconds`, default 30; 0 skips it): `tiffin serve` of the ONNX fp32
artifact on the fastest torch-free runtime that passed (batching off), the same 10 s recording
POSTed as a 16 kHz wav at concurrency 1 from a child process; then the pipeline and that
runtime's in-process call are timed again, so the served p50 is compared with the mean of the
two in-process readings that bracket it, and the served transcript with the in-process one.

`--model parakeet-ctc-0.6b`: Parakeet CTC's 0.6B architecture (transformers' default ParakeetCTCConfig:
24 FastConformer layers of 1024, log-mel features, a 1,024-piece SentencePiece vocabulary with the blank
last), random weights, saved with its feature extractor and a tokenizer.json. Its fp32 weights (2.4 GB)
pass protobuf's limit, so the ONNX artifact is model.onnx + model.onnx.data. The peer is transformers'
own ParakeetFeatureExtractor + ParakeetForCTC forward, eager fp32, greedy argmax (the ASR pipeline does
not take this model); tiffin's candidates are ONNX fp32 and int8 and the table's other runtimes.

Run: .venv/bin/python benchmarks/speech_inference.py [--model wav2vec2-base|parakeet-ctc-0.6b] [--runs 5]
     [--keep] [--serve-seconds 30]
Writes benchmarks/results/speech_inference.json (speech_inference_parakeet.json for Parakeet).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import alternate, save_results  # noqa: E402

SENTENCE = ("the quick brown fox jumps over the lazy dog while seven bright students read their books "
            "quietly in the old library near the river")
CANDIDATES = [("onnx", "fp32"), ("onnx", "int8"), ("torchscript", "bf16")]


def speech(folder: Path, seconds: float = 10.0) -> np.ndarray:
    """`seconds` of espeak-ng speech at 16 kHz (the sentence, repeated or cut to length)."""
    from tiffin.audio_io import load_audio

    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), SENTENCE], check=True)
    wave = load_audio(wav, 16000)
    need = int(seconds * 16000)
    return np.tile(wave, need // len(wave) + 1)[:need].astype(np.float32)


def base_folder(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    from tiffin.ctc import BASE_960H_TOKENS

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(BASE_960H_TOKENS))).eval()  # base: 768 x 12, group norm
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(BASE_960H_TOKENS)}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def parakeet_folder(folder: Path) -> Path:
    """Parakeet-CTC-0.6B's architecture with random weights, its feature extractor, and a tokenizer.json
    of 1,024 SentencePiece-style pieces (the blank <pad> added last, as Parakeet's tokenizer has it)."""
    import itertools
    import string

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC, ParakeetTokenizer
    from transformers.tokenization_utils_base import generate_merges

    mark = "\u2581"
    letters = string.ascii_lowercase
    pieces = ["<unk>", mark, *letters, *(mark + c for c in letters)]
    for a, b in itertools.product(letters, repeat=2):  # then two-letter pieces, word-initial and inside
        pieces += [a + b] + ([mark + a + b] if len(pieces) < 900 else [])
        if len(pieces) >= 1024:
            break
    pieces = pieces[:1024]
    vocab = {t: i for i, t in enumerate(pieces)}
    merges = generate_merges(vocab, {t: -i for t, i in vocab.items() if t != "<unk>"}, skip_tokens=["<unk>"])
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=mark, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=mark, prepend_scheme="always")
    tokenizer.add_special_tokens([AddedToken("<pad>", normalized=False, special=True)])
    torch.manual_seed(0)
    ParakeetForCTC(ParakeetCTCConfig(vocab_size=1025, pad_token_id=1024)).eval().save_pretrained(folder)
    ParakeetTokenizer(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>").save_pretrained(folder)
    ParakeetFeatureExtractor().save_pretrained(folder)
    return folder


def parakeet_peer(folder: Path):
    """transformers' own path for Parakeet CTC: feature extractor, model forward, greedy ids, decode."""
    from transformers import ParakeetFeatureExtractor, ParakeetForCTC, ParakeetTokenizer

    extractor = ParakeetFeatureExtractor.from_pretrained(folder)
    model = ParakeetForCTC.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = ParakeetTokenizer.from_pretrained(folder)

    def run(wave: np.ndarray) -> str:
        with torch.inference_mode():
            inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
            ids = model(**inputs).logits.argmax(-1)[0].tolist()
        collapsed = [i for j, i in enumerate(ids) if i != model.config.pad_token_id and (j == 0 or ids[j - 1] != i)]
        return tokenizer.decode(collapsed)

    return run


def cer(a: str, b: str) -> float:
    """CER between two transcripts, special tokens (`<unk>`, which the pipeline's tokenizer spells
    out and tiffin's decoder drops) and extra spaces removed from both."""
    import re

    from tiffin.ctc import error_rates

    a, b = (" ".join(re.sub(r"<[^>]*>", "", t).split()) for t in (a, b))
    return error_rates([a], [b])[1] if a else float(bool(b))


def http(artifact: Path, wav: Path, runtime: str, seconds: float) -> dict:
    """`tiffin serve ARTIFACT` on `runtime` (batching off) asked to transcribe `wav` one request at a
    time for `seconds` after a 5 s warm-up: the load summary and the served transcript."""
    import urllib.request
    import uuid

    from benchmarks.load import Upload, multipart_body, run_load, started_server

    env = {"TIFFIN_BATCHING": "0", "TIFFIN_RUNTIME": runtime, "BENTOML_HOME": str(artifact.parent / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "True"}
    with started_server(["tiffin", "serve", str(artifact)], artifact.parent / "serve.log", env) as (url, _):
        boundary = uuid.uuid4().hex
        request = urllib.request.Request(url + "/transcribe", data=multipart_body(boundary, [("audio", wav.name,
                                         wav.read_bytes())]), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=120) as response:
            text = json.loads(response.read())["text"]
        run_load(url + "/transcribe", "audio", [Upload(wav, True)], 1, 5)  # warm-up
        return {**run_load(url + "/transcribe", "audio", [Upload(wav, True)], 1, seconds).summary(), "text": text}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the model folder and artifacts (for serving.py --artifact)")
    parser.add_argument("--serve-seconds", type=float, default=30)
    parser.add_argument("--http", nargs=4, metavar="ARTIFACT WAV RUNTIME SECONDS", help=argparse.SUPPRESS)  # a child
    parser.add_argument("--model", default="wav2vec2-base", choices=["wav2vec2-base", "parakeet-ctc-0.6b"])
    args = parser.parse_args()
    if args.http:
        print(json.dumps(http(Path(args.http[0]), Path(args.http[1]), args.http[2], float(args.http[3]))))
        return

    from transformers import pipeline

    from tiffin.export.exporting import ExportOptions, export_model
    from tiffin.export.parity import ParityError
    from tiffin.ctc import Vocabulary
    from tiffin.host import open_artifact
    from tiffin.train.predict import load_speech_model

    work = Path(tempfile.mkdtemp())
    parakeet = args.model == "parakeet-ctc-0.6b"
    folder = parakeet_folder(work / "parakeet") if parakeet else base_folder(work / "wav2vec2-base")
    wave = speech(work)
    if parakeet:
        peer_run = parakeet_peer(folder)
        peer_key = "transformers ParakeetForCTC eager fp32"
    else:
        pipe = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
        peer_run, peer_key = (lambda w: pipe(w)["text"]), "transformers pipeline eager fp32"
    vocab = Vocabulary.of_spec(load_speech_model(folder).spec)

    def tiffin_run(predictor):
        return lambda: vocab.decode_logits(predictor.recording_logits(wave))

    def frames(predictor) -> np.ndarray:
        return predictor.recording_logits(wave).argmax(-1)

    eager = load_speech_model(folder).predictor()
    timers = {peer_key: lambda: peer_run(wave.copy()), "tiffin eager fp32": tiffin_run(eager)}
    reference_frames = frames(eager)
    described = ("Parakeet-CTC-0.6B architecture (transformers' default ParakeetCTCConfig), random weights"
                 if parakeet else "wav2vec2-base architecture (94M parameters), random weights")
    results = {"model": described, "audio_s": 10.0, "peer": peer_key,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "variants": {}}
    for fmt, precision in (CANDIDATES[:2] if parakeet else CANDIDATES):
        key = f"tiffin {fmt} {precision}"
        out = work / key.replace(" ", "-")
        started = time.perf_counter()
        try:
            export_model(ExportOptions(folder, fmt, precision, out=out))
        except ParityError as err:
            results["variants"][key] = {"status": f"parity failed: {err}"}
            continue
        model = open_artifact(out)[0]
        results["variants"][key] = {
            "status": "ok", "export_s": round(time.perf_counter() - started, 1),
            "size_mb": round(sum(p.stat().st_size for p in out.iterdir()) / 2**20, 1),
            "frame_agreement": float((frames(model) == reference_frames).mean())}
        timers[key] = tiffin_run(model)
    # the ONNX fp32 artifact on the table's other runtimes (OpenVINO, and its bf16 hint where the
    # CPU has bf16), each behind the gate on its own outputs (bf16's tolerances for the hint)
    from tiffin.export.recheck import check_artifact
    from tiffin.runtimes import runtimes_for

    onnx = work / "tiffin-onnx-fp32"
    for runtime in runtimes_for("onnx")[1:] if onnx.is_dir() else []:
        key = f"tiffin onnx fp32 on {runtime.name}"
        if not runtime.installed or runtime.needs():
            results["variants"][key] = {"status": f"skipped: {runtime.needs() or 'not installed'}"}
            continue
        try:
            report = check_artifact(onnx, runtime=runtime.name)
        except ParityError as err:
            results["variants"][key] = {"status": f"parity failed: {err}"}
            continue
        model = open_artifact(onnx, runtime=runtime.name)[0]
        results["variants"][key] = {"status": "ok", "max_abs_diff": report["max_abs_diff"],
                                    "frame_agreement": float((frames(model) == reference_frames).mean())}
        timers[key] = tiffin_run(model)
    texts = {key: run() for key, run in timers.items()}
    samples = alternate(timers, args.runs)
    peer_s = statistics.median(samples[peer_key])
    for key, times in samples.items():
        entry = results["variants"].setdefault(key, {"status": "ok"})
        median = statistics.median(times)
        entry.update(median_ms=round(1000 * median, 1), rtf=round(median / 10.0, 4), speedup=round(peer_s / median, 2),
                     cer_vs_peer=round(cer(texts[peer_key], texts[key]), 4),
                     transcript_chars=len(texts[key]))
    served = [k for k in ("tiffin onnx fp32 on openvino-bf16", "tiffin onnx fp32 on openvino", "tiffin onnx fp32")
              if results["variants"].get(k, {}).get("status") == "ok"]
    if args.serve_seconds > 0 and served:
        key = min(served, key=lambda k: results["variants"][k]["median_ms"])
        runtime = key.split(" on ")[1] if " on " in key else "onnxruntime"
        import soundfile as sf

        sf.write(work / "speech-16k.wav", wave, 16000, subtype="FLOAT")  # the very samples timed in-process
        # the load generator in a process of its own: this one holds every in-process session's threads
        summary = json.loads(subprocess.run([sys.executable, __file__, "--http", str(onnx), str(work / "speech-16k.wav"),
                                             runtime, str(args.serve_seconds)], check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
        again = alternate({peer_key: timers[peer_key], key: timers[key]}, args.runs)
        bracket = {k: (results["variants"][k]["median_ms"] + 1000 * statistics.median(again[k])) / 2 for k in again}
        results["served"] = {
            "runtime": runtime, "http": {k: v for k, v in summary.items() if k != "text"},
            "in_process_ms": round(bracket[key], 1), "peer_ms": round(bracket[peer_key], 1),
            "served_over_in_process": round(summary["p50_ms"] / bracket[key], 3),
            "speedup_vs_peer": round(bracket[peer_key] / summary["p50_ms"], 2),
            "text_equals_in_process": summary["text"] == texts[key]}
    print(json.dumps(results, indent=1))
    save_results("speech_inference_parakeet" if parakeet else "speech_inference", results)
    if args.keep:
        print(f"kept: {work} (the Hugging Face folder and each artifact)")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
