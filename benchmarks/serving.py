"""Serving: `tiffin serve` over HTTP vs the same code called in-process, for both services.

Models: the embedded defaults (tiffin/tiny-motion, tiffin/tiny-en) exported to ONNX fp32.
In-process, one thread calls the service class directly, as BentoML does in a worker
(decode + ONNX Runtime + answer): that latency is the floor, and its calls/s the batch-1
throughput HTTP is compared with. Over HTTP a bounded load generator on loopback
(benchmarks/load.py: N client threads, fixed duration) runs at concurrency 1, 4 and 16 with
adaptive batching on (a model worker batches the API worker's calls) and off (the API worker
runs the model itself). Files: the demo's synthetic videos (2 s) and 4 s espeak-ng
sentences.

With --base-speech, also a wav2vec2-base-sized model (random weights) on 10 s of speech at
concurrency 1: the same fixed cost against a model of realistic size.

With --artifact TASK=FOLDER (an exported ONNX artifact, e.g. a SlowFast-R50) and --runtimes,
that artifact alone, on each runtime (TIFFIN_RUNTIME), in-process (the service class, and the
model call alone: the fastest in-process variant) and over HTTP.

With --pin SERVER:LOAD (e.g. 0:1) the server and the in-process floor run on the first cores
and the load generator on the second, the model with one thread per server core: the
concurrency-16 throughput is then the server's own against the same cores' batch-1 floor.

Run: .venv/bin/python benchmarks/serving.py [--seconds 15] [--base-speech] [--pin 0:1]
     .venv/bin/python benchmarks/serving.py --artifact video=FOLDER --runtimes onnxruntime,openvino
         --concurrency 1 --out serving-slowfast
Writes benchmarks/results/serving.json (or OUT.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import save_results  # noqa: E402

from benchmarks.load import Upload, run_load, started_server  # noqa: E402

SERVICES = {"video": ("tiffin/tiny-motion", "/classify", "video"), "speech": ("tiffin/tiny-en", "/transcribe", "audio")}


def media(work: Path) -> dict[str, list[Path]]:
    from tiffin.train.synthetic import make_motion_dataset

    make_motion_dataset(work / "videos", per_class=2, seed=3, size=(160, 120))
    videos = sorted(p for p in (work / "videos").rglob("*") if p.is_file())[:8]
    sentences = ["the old man walked home in the rain", "seven students read quietly near the river",
                 "a bright lamp hangs over the wooden table", "she paints the small boat green and blue"]
    audio = []
    for i, text in enumerate(sentences):
        path = work / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True)
        audio.append(path)
    return {"video": videos, "speech": audio}


def in_process(task: str, artifact: Path, files: list[Path], seconds: float) -> dict:
    """The service class called directly, one call at a time, and its model alone."""
    os.environ["TIFFIN_ARTIFACT"] = str(artifact)
    if task == "video":
        from tiffin.serve.video import VideoClassifier

        service = VideoClassifier()
        call = lambda f: service.classify(f, top_k=5)  # noqa: E731
    else:
        from tiffin.serve.speech import SpeechRecognizer

        service = SpeechRecognizer()
        call = lambda f: service.transcribe(f)  # noqa: E731
    for f in files:
        call(f)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        for f in files:
            began = time.perf_counter()
            call(f)
            times.append(time.perf_counter() - began)
    result = {"calls": len(times), "p50_ms": round(1000 * statistics.median(times), 1),
              "calls_per_s": round(len(times) / sum(times), 2)}
    if task == "video":  # the model call alone on one decoded clip: the fastest in-process variant's figure
        clip = service.host.clips(files[0], 1)
        model = service.model.model if hasattr(service.model, "model") else service.model
        alone = []
        for _ in range(max(3, min(20, len(times)))):
            began = time.perf_counter()
            model(clip)
            alone.append(time.perf_counter() - began)
        result["model_call_p50_ms"] = round(1000 * statistics.median(alone), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--base-speech", action="store_true",
                        help="also a wav2vec2-base-sized model (random weights) on 10 s recordings, concurrency 1")
    parser.add_argument("--artifact", default=None, help="TASK=FOLDER: this ONNX artifact instead of the embedded models")
    parser.add_argument("--runtimes", default="", help="comma-separated TIFFIN_RUNTIME values [default: the artifact's]")
    parser.add_argument("--out", default="serving", help="results file name (benchmarks/results/OUT.json)")
    parser.add_argument("--pin", default=None, metavar="SERVER:LOAD",
                        help="cores for the server and the in-process floor, and for the load generator, e.g. 0:1; "
                             "the model gets as many threads as the server has cores")
    parser.add_argument("--in-process", nargs="+", metavar="TASK ARTIFACT SECONDS FILE",
                        help=argparse.SUPPRESS)  # the in-process floor, run by this script in a child
    args = parser.parse_args()
    if args.in_process:
        task, artifact, seconds, *paths = args.in_process
        print(json.dumps(in_process(task, Path(artifact), [Path(p) for p in paths], float(seconds))))
        return
    work = Path(tempfile.mkdtemp(prefix="tiffin-serving-"))
    files = media(work)
    services = dict(SERVICES)
    if args.base_speech:
        import soundfile as sf

        from benchmarks.speech_inference import base_folder, speech

        (work / "base").mkdir()
        services["speech-base"] = (str(base_folder(work / "base")), "/transcribe", "audio")
        files["speech-base"] = [work / "base-10s.wav"]
        sf.write(files["speech-base"][0], speech(work / "base"), 16000)
    given = None
    if args.artifact:
        task_name, folder = args.artifact.split("=", 1)
        given = Path(folder).resolve()
        services = {f"{task_name}-{runtime or 'recorded'}": (*SERVICES[task_name][1:], runtime)
                    for runtime in (args.runtimes.split(",") if args.runtimes else [""])}
        files = {name: files[task_name] for name in services}
    from tiffin.cpu import cpu_features

    results: dict = {"cpu": cpu_features(), "cpu_count": os.cpu_count(), "seconds_per_run": args.seconds,
                     "services": {}}
    every_core = os.sched_getaffinity(0)
    server_cores = load_cores = every_core
    if args.pin:  # the figure is then the server's, not the server and the load generator sharing cores
        server_cores, load_cores = ({int(c) for c in part.split(",")} for part in args.pin.split(":"))
        results["pinned"] = {"server": sorted(server_cores), "load_generator": sorted(load_cores)}
    pinned_env = {"TIFFIN_THREADS": str(len(server_cores))} if args.pin else {}
    for name, spec in services.items():
        if given is not None:
            (path, field, runtime), model, artifact = spec, str(given), given
        else:
            (model, path, field), runtime, artifact = spec, "", work / f"{name}-onnx"
            subprocess.run([sys.executable, "-m", "tiffin", "export", model, "--format", "onnx", "--out", str(artifact)],
                           check=True, capture_output=True)
        task = "speech" if field == "audio" else "video"
        runtime_env = {**({"TIFFIN_RUNTIME": runtime} if runtime else {}), **pinned_env}
        os.sched_setaffinity(0, server_cores)  # children inherit it: the floor and the server
        # in a process of its own: bentoml.depends keeps the first model a service class was given
        floor = subprocess.run([sys.executable, __file__, "--in-process", task, str(artifact), str(args.seconds),
                                *map(str, files[name])], check=True, capture_output=True, text=True,
                               env={**os.environ, **runtime_env})
        entry = {"model": model, "in_process": json.loads(floor.stdout.strip().splitlines()[-1]), "http": []}
        mix = [Upload(f, True, (("top_k", "5"),) if field == "video" else ()) for f in files[name]]
        for batching in ("1", "0"):
            env = {"TIFFIN_BATCHING": batching, "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
                   **runtime_env}
            os.sched_setaffinity(0, server_cores)
            with started_server(["tiffin", "serve", str(artifact)], work / f"{name}-{batching}.log", env) as (url, _):
                os.sched_setaffinity(0, load_cores)
                run_load(url + path, field, mix, 4, 3)  # warm-up
                for concurrency in [1] if name == "speech-base" else (int(c) for c in args.concurrency.split(",")):
                    report = run_load(url + path, field, mix, concurrency, args.seconds)
                    summary = report.summary()
                    assert summary["failed_good"] == 0, summary
                    entry["http"].append({"batching": batching == "1", "concurrency": concurrency, **summary})
                    print(name, batching, concurrency, summary, flush=True)
        os.sched_setaffinity(0, every_core)
        floor = entry["in_process"]
        for batching in (True, False):
            one = next(h for h in entry["http"] if h["concurrency"] == 1 and h["batching"] == batching)
            entry[f"overhead_at_c1_batching_{'on' if batching else 'off'}"] = {
                "ms": round(one["p50_ms"] - floor["p50_ms"], 1), "share": round(one["p50_ms"] / floor["p50_ms"] - 1, 3)}
        for h in entry["http"]:
            h["throughput_vs_in_process_batch1"] = round(h["requests_per_s"] / floor["calls_per_s"], 2)
            if "model_call_p50_ms" in floor:  # served latency against the model call alone
                h["p50_vs_model_call"] = round(h["p50_ms"] / floor["model_call_p50_ms"], 3)
        results["services"][name] = entry
        print(json.dumps(entry, indent=1), flush=True)
    save_results(args.out, results)


if __name__ == "__main__":
    main()
