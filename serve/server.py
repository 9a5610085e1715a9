"""A `bentoml serve` of an artifact as a child process of the caller: the Python API's way to serve.

`tiffin serve` becomes the server (exec); a notebook or a script must stay itself, so
`start()` runs the same command line (tiffin.serve.commands.checked_command_line) in a
process group of its own, waits until /readyz answers, and returns a `Server` handle whose
`stop()` ends the whole group (BentoML's API and model workers with it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tiffin.errors import TiffinError
from tiffin.serve.commands import checked_command_line


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """A running server: `url`, `pid`, `log` (its output), `stop()`; a context manager.

    Example:
        >>> with tiffin.load("runs/x/export/onnx-fp32").serve(port=0) as server:
        ...     print(server.url)
    """

    def __init__(self, process: subprocess.Popen, url: str, log: Path, cleanup: list[Path] | None = None):
        self.process, self.url, self.log = process, url, log
        self.cleanup = cleanup or []  # folders this server owns (an export made to serve a model)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the server's process group (BentoML drains and exits), SIGKILL after `timeout`."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)
        self.cleanup = []

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Server({self.url}, pid {self.pid}, {'running' if self.running() else 'stopped'})"


def start(artifact: str | Path, host: str = "127.0.0.1", port: int = 3000, workers: int = 1,
          settings: dict[str, str] | None = None, ready_timeout: float = 180,
          cleanup: list[Path] | None = None) -> Server:
    """Start `bentoml serve` on `artifact` in the background and wait until it is ready.

    `port=0` picks a free port. `settings`: TIFFIN_* variables (README's serving table).

    Raises:
        TiffinError: bad settings, or the server exited or was not ready in `ready_timeout`
            seconds (with the last line of its log).
    """
    port = free_port(host) if port == 0 else port
    command, env = checked_command_line(Path(artifact), host, port, workers, settings)
    log = Path(tempfile.mkstemp(prefix="tiffin-serve-", suffix=".log")[1])
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", log, cleanup)
    try:
        return _ready(server, artifact, log, ready_timeout)
    except BaseException:  # not ready, or interrupted while waiting (Ctrl-C): no server left running
        server.stop()
        raise


def _ready(server: "Server", artifact: str | Path, log: Path, ready_timeout: float) -> "Server":
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            raise TiffinError(f"{artifact}: the server exited ({lines[-1].strip() if lines else 'no output'}); "
                              f"its log is {log}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.3)
    raise TiffinError(f"{artifact}: the server was not ready in {ready_timeout:.0f} s; its log is {log}")
