"""A bounded HTTP load generator for the services: N client threads on loopback, a fixed
duration and request cap, hand-written multipart (as a client that is not BentoML's would send),
latencies and statuses per request, and the server's memory (RSS of its process tree) over time.

Used by tests/test_load.py (faults and load) and benchmarks/serving.py (throughput figures).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class Upload:
    """One request of the mix: a file for the field, and whether a 200 is the right answer."""

    path: Path
    good: bool
    fields: tuple[tuple[str, str], ...] = ()


@dataclass
class Result:
    status: int  # 0: no HTTP answer (connection refused or reset)
    seconds: float
    good: bool
    started: float  # since the load began


@dataclass
class LoadReport:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return dict(sorted(counts.items()))

    def failed_good(self) -> list[Result]:
        return [r for r in self.results if r.good and r.status != 200]

    def server_errors(self) -> list[Result]:
        return [r for r in self.results if r.status >= 500 or r.status == 0]

    def percentile_ms(self, q: float, good_only: bool = True) -> float:
        times = sorted(r.seconds for r in self.results if r.good or not good_only)
        if not times:
            return float("nan")
        return 1000 * times[min(len(times) - 1, int(q / 100 * len(times)))]

    def throughput(self) -> float:
        return len(self.results) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"requests": len(self.results), "seconds": round(self.seconds, 1),
                "requests_per_s": round(self.throughput(), 2), "statuses": self.statuses(),
                "p50_ms": round(self.percentile_ms(50), 1), "p99_ms": round(self.percentile_ms(99), 1),
                "failed_good": len(self.failed_good()), "server_errors": len(self.server_errors())}


def multipart_body(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart/form-data body written by hand: (field name, file name or None for a plain
    field, bytes) per part. Names are sent as given (surrogates too), as a hostile client might."""
    body = b""
    for name, filename, data in parts:
        head = f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        if filename is not None:
            head += f"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
        body += (head + "\r\n\r\n").encode("utf-8", "surrogatepass") + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def post(url: str, field_name: str, upload: Upload, timeout: float = 120) -> int:
    """POST one upload as multipart; the HTTP status (0 when the connection failed)."""
    boundary = uuid.uuid4().hex
    body = multipart_body(boundary, [(k, None, v.encode()) for k, v in upload.fields]
                          + [(field_name, upload.path.name, upload.path.read_bytes())])
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children, in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_load(url: str, field_name: str, mix: list[Upload], concurrency: int, seconds: float,
             max_requests: int = 1_000_000, server_pid: int | None = None, during=None) -> LoadReport:
    """`concurrency` threads send the mix round-robin until `seconds` pass or `max_requests` are
    sent; `during(elapsed)` is called about every 0.5 s from the main thread (fault injection)."""
    report = LoadReport()
    order = itertools.cycle(range(len(mix)))
    lock = threading.Lock()
    sent = 0
    start = time.perf_counter()

    def client() -> None:
        nonlocal sent
        while True:
            with lock:
                if sent >= max_requests or time.perf_counter() - start >= seconds:
                    return
                sent += 1
                upload = mix[next(order)]
            began = time.perf_counter()
            status = post(url, field_name, upload)
            with lock:
                report.results.append(Result(status, time.perf_counter() - began, upload.good, began - start))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        elapsed = time.perf_counter() - start
        if server_pid is not None:
            report.rss_mb.append((elapsed, tree_rss_mb(server_pid)))
        if during is not None:
            during(elapsed)
        time.sleep(0.5)
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - start
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def started_server(command: list[str], log_path: Path, env: dict[str, str | None] | None = None,
                   cwd: Path | None = None) -> Iterator[tuple[str, int]]:
    """`python -m COMMAND --port PORT` (`tiffin serve ARTIFACT`, `bentoml serve TAG`) on a free
    loopback port, in a process group of its own, with `env` over this process's environment (a
    None value unsets a variable); yields (url, pid) once /readyz answers, and stops the whole
    group after."""
    port = free_port()
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", *command, "--port", str(port)], cwd=cwd,
                               env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
                               stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[:2])} exited: {log_path.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        else:
            raise RuntimeError("server not ready in 120 s")
        yield url, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
