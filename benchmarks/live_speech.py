"""Live transcription: how soon a spoken word shows, and how many live streams one server keeps up with.

Model: the embedded tiffin/tiny-en exported to ONNX fp32 (its 30 s window, stride 5 s), served by
`tiffin serve` (one API worker, adaptive batching in a model worker, the defaults; --no-batching:
the model in the API worker). Audio:
espeak-ng sentences joined into one recording of about --seconds, as a 16 kHz 16-bit wav, sent
to `/transcribe/stream` in 100 ms messages by N client threads at once (N = --concurrency).

- Latency, streams paced at real time (as a microphone would send): for each word of the
  offline transcript (`tiffin predict`'s words, with their end times), the time from the end of
  the word in the stream (the stream's start, one message's audio before its first message was
  sent, plus the word's `end`) to the first answer in which the word shows, in a partial or a
  result (committed words, then the partial's): `shown`, a word at its place, however spelt;
  `exact`, spelt as in the transcript (a partial's reading of a word can change as its window
  grows: the model normalises each window over its samples). p50 and p90 over every word of
  every stream.
- Real-time factor, streams sent as fast as the server answers: each stream's wall time over
  its audio's duration (below 1: faster than real time), and the audio seconds the server
  transcribed per second, all streams together. Every stream's final text is checked equal to
  the offline transcript.

Run: .venv/bin/python benchmarks/live_speech.py [--seconds 45] [--concurrency 1,4,16] [--no-batching]
Writes benchmarks/results/live_speech.json (or OUT.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results, tiffin  # noqa: E402
from benchmarks.load import started_server  # noqa: E402

SENTENCES = ["the old man walked home in the rain", "seven students read quietly near the river",
             "a bright lamp hangs over the wooden table", "she paints the small boat green and blue",
             "we will meet again at noon tomorrow", "the quick brown fox jumps over the lazy dog",
             "my sister keeps three cats and a small dog", "the train leaves the station at half past nine"]
CHUNK_S = 0.1


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def recording(work: Path, seconds: float) -> Path:
    """espeak-ng sentences, repeated up to about `seconds`, as a 16 kHz 16-bit mono wav."""
    import soundfile as sf

    from tiffin.audio_io import load_audio

    text, k = [], 0
    while len(" ".join(text).split()) < seconds * 2.4:  # espeak-ng at 150 words a minute says ~2.5 a second
        text.append(SENTENCES[k % len(SENTENCES)])
        k += 1
    spoken = work / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(spoken), ". ".join(text) + "."], check=True)
    wav = work / "speech16.wav"
    sf.write(wav, load_audio(spoken, 16000), 16000, subtype="PCM_16")
    return wav


def one_stream(endpoint: str, pieces: list[bytes], realtime: bool, out: dict) -> None:
    """Send `pieces` (100 ms of PCM each) then eof; record the start and each answer's arrival, or
    the close that ended the stream early (`error`)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    answers = []
    with connect(endpoint, compression=None, open_timeout=60) as ws:
        ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        start = time.monotonic()
        try:
            for k, piece in enumerate(pieces):
                if realtime:
                    time.sleep(max(0.0, start + k * CHUNK_S - time.monotonic()))
                ws.send(piece)
                answers.append((time.monotonic(), json.loads(ws.recv())))
            ws.send('{"eof" : 1}')
            answers.append((time.monotonic(), json.loads(ws.recv())))
        except ConnectionClosed as closed:
            out["error"] = f"{closed.rcvd.code} {closed.rcvd.reason}" if closed.rcvd else "connection lost"
    out.update(start=start, end=time.monotonic(), answers=answers)


def streams(endpoint: str, pieces: list[bytes], n: int, realtime: bool) -> list[dict]:
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=one_stream, args=(endpoint, pieces, realtime, outs[i])) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def latencies(out: dict, words: list[dict]) -> dict[str, list[float]]:
    """Seconds from each word's end to its first showing (a microphone's stream starts one message
    before its first message goes: that message is the audio it had to record first): `shown`,
    the first answer with a word at its place (committed words, then the partial's), however
    spelt; `exact`, the first with the word at its place spelt as in the transcript."""
    spoken_from = out["start"] - CHUNK_S
    committed: list[str] = []
    shown: dict[int, float] = {}
    exact: dict[int, float] = {}
    for at, answer in out["answers"]:
        if "partial" in answer:
            visible = committed + answer["partial"].split()
        else:
            committed += answer["text"].split()
            visible = committed
        for i, word in enumerate(visible[: len(words)]):
            shown.setdefault(i, at)
            if i not in exact and word == words[i]["word"]:
                exact[i] = at
    return {kind: [seen[i] - (spoken_from + w["end"]) for i, w in enumerate(words) if i in seen]
            for kind, seen in (("shown", shown), ("exact", exact))}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the recording (about)")
    parser.add_argument("--concurrency", default="1,4,16", help="streams at once, comma-separated")
    parser.add_argument("--no-batching", action="store_true", help="TIFFIN_BATCHING=0: the model in the API worker")
    parser.add_argument("--out", default="live_speech")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    from tiffin.host import open_artifact
    from tiffin.live_client import _chunks, pcm16

    import soundfile as sf

    work = Path(tempfile.mkdtemp(prefix="tiffin-live-bench-"))
    artifact = work / "tiny-en"
    tiffin("export", "tiffin/tiny-en", "--out", artifact)
    wav = recording(work, args.seconds)
    audio, _ = sf.read(wav, dtype="float32")
    seconds = len(audio) / 16000
    pieces = [pcm16(p) for p in _chunks([audio], int(CHUNK_S * 16000))]
    offline = open_artifact(artifact)[0].predict_file(wav, timestamps=True)
    words, text = offline["words"], offline["text"]
    load = os.getloadavg()
    results = {"cpu": cpu_name(), "cores": os.cpu_count(), "audio_s": round(seconds, 2), "words": len(words),
               "load_before": [round(x, 2) for x in load], "date": time.strftime("%Y-%m-%d"), "levels": {}}
    print(f"{cpu_name()}, {os.cpu_count()} cores; {seconds:.1f} s of speech, {len(words)} words; load {load}")
    results["batching"] = not args.no_batching
    env = {"BENTOML_HOME": str(work / "bentoml"), "TIFFIN_BATCHING": "0" if args.no_batching else "1"}
    with started_server(["tiffin", "serve", str(artifact)], work / "server.log", env) as (url, _):
        endpoint = url.replace("http://", "ws://") + "/transcribe/stream"
        streams(endpoint, pieces[:20], 1, realtime=False)  # warm-up
        for n in levels:
            runs = streams(endpoint, pieces, n, realtime=False)
            fast = [out for out in runs if "error" not in out]
            for out in fast:
                got = " ".join(a["text"] for _, a in out["answers"] if a.get("text"))
                assert got == text, (got, text)
            rtf = [(out["end"] - out["start"]) / seconds for out in fast] or [math.nan]
            wall = max(out["end"] for out in runs) - min(out["start"] for out in runs)
            paced_runs = streams(endpoint, pieces, n, realtime=True)
            paced = [out for out in paced_runs if "error" not in out]
            errors = sorted({out["error"] for out in runs + paced_runs if "error" in out})
            lat = {kind: [x for out in paced for x in latencies(out, words)[kind]] for kind in ("shown", "exact")}
            lag = [out["end"] - out["start"] - seconds for out in paced] or [math.nan]  # past the audio's length
            row = {"streams_closed_early": {"fast": n - len(fast), "realtime": n - len(paced), "why": errors},
                   "rtf_mean": round(statistics.mean(rtf), 4), "rtf_max": round(max(rtf), 4),
                   "audio_s_per_s": round(len(fast) * seconds / wall, 2),
                   **{f"{kind}_p{q}_s": round(percentile(lat[kind], q / 100), 3) for kind in lat for q in (50, 90)},
                   "words": n * len(words), "realtime_end_lag_s": round(max(lag), 2),
                   "load_after": [round(x, 2) for x in os.getloadavg()]}
            results["levels"][str(n)] = row
            print(f"{n:>2} streams: RTF {row['rtf_mean']:.3f} (max {row['rtf_max']:.3f}), "
                  f"{row['audio_s_per_s']:.1f} audio s/s; real time, word end -> shown p50/p90 "
                  f"{row['shown_p50_s']:.2f}/{row['shown_p90_s']:.2f} s, exact {row['exact_p50_s']:.2f}/"
                  f"{row['exact_p90_s']:.2f} s, last answer {row['realtime_end_lag_s']:.2f} s after the audio; "
                  f"load {row['load_after']}" + (f"; closed early: {row['streams_closed_early']}" if errors else ""))
    print(save_results(args.out, results))


if __name__ == "__main__":
    main()
