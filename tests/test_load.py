"""Load and faults on real `tiffin serve` processes: workers killed under load, and both services
held at concurrency 32 for 60 s with good and bad uploads mixed."""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

from benchmarks.load import LoadReport, Upload, run_load, tree_rss_mb
from tests.media_corpus import LIMITS, OK
from tests.helpers import SERVER_PIDS, running_server

LOAD_SECONDS = 60
CONCURRENCY = 32
# memory is read at rest between rounds of the same uploads, and its trend taken per request
# answered: a loaded machine answers fewer requests a second, not fewer a round
ROUND_REQUESTS = 250
MIN_ROUNDS = 7
WARMUP_ROUNDS = 3
MAX_SECONDS = 600
# a leak grows the RSS every round; what grows without one after warm-up (thread pools and
# allocator arenas reaching their size later on a loaded machine) stayed under 2.4 KB a request
KB_PER_REQUEST = 5.0


def mixes(media_corpus, videos: list[Path], recordings: list[Path]) -> dict[str, list[Upload]]:
    """Per field: good files and the corpus's refusals, about one request in four refused."""
    bad = {field: [Upload(path, False) for case, path in media_corpus
                   if case.field == field and case.status != OK] for field in ("video", "audio")}
    return {"video": [Upload(v, True, (("top_k", "2"),)) for v in videos] * 2 + bad["video"][:5],
            "audio": [Upload(r, True) for r in recordings] * 2 + bad["audio"][:5]}


def _worker(server_pid: int, service_name: str) -> psutil.Process:
    for child in psutil.Process(server_pid).children(recursive=True):
        command = child.cmdline()
        if "--service-name" in command and command[command.index("--service-name") + 1] == service_name:
            return child
    raise AssertionError(f"no {service_name} worker under {server_pid}")


def test_workers_killed_under_load_are_restarted_and_only_in_flight_requests_fail(artifacts, videos, media_corpus,
                                                                                    recordings, tmp_path):
    concurrency = 8
    mix = mixes(media_corpus, videos, recordings)["video"]
    with running_server(artifacts["video"], tmp_path, TIFFIN_WORKERS=2, **LIMITS) as url:
        pid = SERVER_PIDS[url]
        killed: dict[str, tuple[int, float]] = {}

        def kill(elapsed: float) -> None:
            for name, at in (("tiffin-video-model", 4.0), ("tiffin-video", 12.0)):
                if elapsed >= at and name not in killed:
                    worker = _worker(pid, name)
                    worker.kill()
                    killed[name] = (worker.pid, elapsed)

        report = run_load(url + "/classify", "video", mix, concurrency, seconds=28, server_pid=pid, during=kill)
        assert set(killed) == {"tiffin-video-model", "tiffin-video"}
        for name, (old_pid, _) in killed.items():
            assert _worker(pid, name).pid != old_pid  # BentoML started a new one

    failed = report.failed_good()
    # at most what was in flight at the two kills; refused with 503 (model worker gone) or a dropped
    # connection (the API worker itself gone), never a wrong answer or a 500
    assert len(failed) <= 2 * concurrency, report.summary()
    assert {r.status for r in failed} <= {503, 0}, report.summary()
    last_kill = max(at for _, at in killed.values())
    assert all(r.started < last_kill + 10 for r in failed), report.summary()
    late = [r for r in report.results if r.started > last_kill + 10]
    assert late and all(r.status == 200 for r in late if r.good), report.summary()
    assert all(r.status in (200, 400, 422, 503, 0) for r in report.results)


def quiet_rss_mb(server_pid: int) -> float:
    """The RSS of a server's process tree with no request in flight: the median of five readings
    over a second, taken a second after the last answer (BentoML cleans up after answering)."""
    time.sleep(1.0)
    readings = []
    for _ in range(5):
        readings.append(tree_rss_mb(server_pid))
        time.sleep(0.2)
    return statistics.median(readings)


def rounds_of_load(url: str, field: str, mix: list[Upload], server_pid: int) -> tuple[LoadReport, list[tuple[int, float]]]:
    """CONCURRENCY clients in rounds of the same ROUND_REQUESTS uploads until LOAD_SECONDS of load
    have passed and MIN_ROUNDS have run; the whole load's report, and the server's RSS at rest
    before the first round and after each: (requests answered so far, MB)."""
    per_round = len(mix) * max(1, round(ROUND_REQUESTS / len(mix)))  # whole passes over the mix
    report = LoadReport()
    points = [(0, quiet_rss_mb(server_pid))]
    began = time.perf_counter()
    while len(points) <= MIN_ROUNDS or report.seconds < LOAD_SECONDS:
        assert time.perf_counter() - began < MAX_SECONDS, f"{len(points) - 1} rounds in {MAX_SECONDS} s"
        offset = report.seconds
        part = run_load(url, field, mix, CONCURRENCY, MAX_SECONDS, max_requests=per_round, server_pid=server_pid)
        report.results += [replace(r, started=r.started + offset) for r in part.results]
        report.rss_mb += [(t + offset, mb) for t, mb in part.rss_mb]
        report.seconds += part.seconds
        points.append((len(report.results), quiet_rss_mb(server_pid)))
    return report, points


def memory_trend(points: list[tuple[int, float]]) -> dict[str, float]:
    """How the RSS at rest grows with requests answered after warm-up (the first third of the
    rounds, WARMUP_ROUNDS at least). Per request answered, not per second, so the same at any
    request rate: the median over the rounds of each round's growth per request (a leak grows every
    round; a one-off step, such as the 13 MB a speech server once took in one round, moves only
    its own), the least-squares slope with its standard error beside it, and the growth from the
    first reading after warm-up to the last."""
    warmup = max(WARMUP_ROUNDS, (len(points) - 1) // 3)
    served, mb = np.array(points[warmup:], dtype=float).T
    per_round = np.diff(mb) / np.diff(served) * 1024
    slope, intercept = np.polyfit(served, mb, 1)
    residual = mb - (slope * served + intercept)
    se = math.sqrt(float(residual @ residual) / (len(mb) - 2) / float(((served - served.mean()) ** 2).sum()))
    return {"kb_per_request": float(np.median(per_round)), "kb_per_request_fit": float(slope) * 1024,
            "kb_per_request_fit_se": se * 1024, "growth": float(mb[-1] / mb[0] - 1), "mb_after_warmup": float(mb[0]),
            "mb_last": float(mb[-1])}


def test_both_services_hold_32_concurrent_clients_for_a_minute(artifacts, videos, recordings, media_corpus, tmp_path):
    """No 5xx, no failed good request, server memory flat after warm-up; the figures are written to
    load.json (README quotes a run). Measured so, in 10 runs at 13 to 50 requests/s (other test
    runs and busy loops sharing the 2 cores, or not): 0.0-2.4 KB per request with no leak, and
    10.4-11.5 KB per request with a leak of 10 KB per request put into the API worker for the trial."""
    mix = mixes(media_corpus, videos, recordings)
    runs = {}
    with running_server(artifacts["video"], tmp_path, **LIMITS) as video_url, \
            running_server(artifacts["speech"], tmp_path, **LIMITS) as speech_url:

        def load(name: str, url: str, path: str, field: str) -> None:
            runs[name] = rounds_of_load(url + path, field, mix[field], SERVER_PIDS[url])

        threads = [threading.Thread(target=load, args=("video", video_url, "/classify", "video")),
                   threading.Thread(target=load, args=("speech", speech_url, "/transcribe", "audio"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    figures = {}
    for name, (report, points) in runs.items():
        summary = report.summary()
        assert summary["requests"] > 100 and summary["server_errors"] == 0 and summary["failed_good"] == 0, summary
        assert set(summary["statuses"]) <= {200, 400, 422}, summary
        # memory at rest between rounds, per request answered after warm-up: BentoML's uncancelled
        # request timers held about 16 KB per request in each worker (serve/request_timers.py),
        # which a 10% bound on a 60 s run did not catch; a trend per second divided by the request
        # rate failed a loaded machine at 3.12 KB per request with no leak
        trend = memory_trend(points)
        assert trend["growth"] < 0.10 and trend["kb_per_request"] < KB_PER_REQUEST, (name, trend, points)
        figures[name] = {**summary, "rounds": len(points) - 1, "rss_mb_after_warmup": round(trend["mb_after_warmup"]),
                         "rss_mb_last": round(trend["mb_last"]), "rss_growth": round(trend["growth"], 4),
                         "rss_kb_per_request": round(trend["kb_per_request"], 2),
                         "rss_kb_per_request_fit": round(trend["kb_per_request_fit"], 2),
                         "rss_kb_per_request_fit_se": round(trend["kb_per_request_fit_se"], 2),
                         "rss_mb_at_rest": [(n, round(mb, 1)) for n, mb in points]}
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
