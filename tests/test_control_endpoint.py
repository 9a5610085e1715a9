"""Issue 27 (hostile inputs) on a real `tiffin serve`: BentoML's process manager takes commands
only from the server's own user (bentoml_patches.private_control), and refused requests leave one
log line each, never a traceback (bentoml_patches.quiet_refusals), and a request head sent too
slowly closes its connection (bentoml_patches.header_timeout). One server serves every test."""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import select
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

REFUSED = 20  # requests of each kind: cut off mid-body, failing validation
HEADER_TIMEOUT_S = 2  # the server's TIFFIN_HEADER_TIMEOUT_S (bentoml_patches.header_timeout)
KEEP_ALIVE_S = 5  # BentoML's uvicorn keep-alive timeout (its `--timeout-keep-alive` default)
SLOW_HEADS = 20  # connections sending a request head a byte every 0.5 s


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    """(url, pid, log path) of `tiffin serve` on the video artifact."""
    from benchmarks.load import started_server

    root = tmp_path_factory.mktemp("control")
    log = root / "server.log"
    env = {"BENTOML_HOME": str(root / "bentoml"), "TIFFIN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}
    with started_server(["tiffin", "serve", str(artifacts["video"])], log, env) as (url, pid):
        yield url, pid, log


def _processes(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def _control_socket(pid: int) -> Path:
    """The circus control endpoint the arbiter (the server's main process) bound."""
    paths = [c.laddr for c in psutil.Process(pid).net_connections("unix") if str(c.laddr).endswith("/control")]
    assert len(paths) == 1, f"no ipc control socket on the server's main process: {paths}"
    return Path(paths[0])


def _ask(endpoint: str, timeout_s: float) -> dict | None:
    """circus's `list` as its own client sends it (a DEALER socket, one JSON frame); the answer,
    or None if none came in time."""
    import zmq

    context = zmq.Context()
    try:
        request = context.socket(zmq.DEALER)
        request.setsockopt(zmq.LINGER, 0)
        request.connect(endpoint)
        request.send_json({"id": uuid.uuid4().hex, "command": "list", "properties": {}})
        if request.poll(int(timeout_s * 1000)):
            return request.recv_json()
        return None
    finally:
        context.destroy(linger=0)


def _as_other_user(path: Path) -> dict:
    """From a forked child running as 'nobody': what connecting to `path` gives (a raw AF_UNIX
    connect, then circus's request over zmq)."""
    if os.geteuid() != 0:
        pytest.fail("this test switches to another uid to prove other users cannot reach the control socket; "
                    "it must run as root (as CI does)")
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: no pytest from here on, only the pipe and os._exit
        result: dict = {}
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result["uid"] = os.getuid()
            with socket.socket(socket.AF_UNIX) as raw:
                try:
                    raw.connect(str(path))
                    result["connect"] = "connected"
                except OSError as err:
                    result["connect"] = type(err).__name__
            result["answer"] = _ask(f"ipc://{path}", timeout_s=2)
        except BaseException as err:  # noqa: BLE001 (reported to the parent, which fails on it)
            result["error"] = f"{type(err).__name__}: {err}"
        os.write(write, json.dumps(result, default=str).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read()
    os.waitpid(child, 0)
    result = json.loads(text or b"{}")
    if "error" in result or result.get("uid") != uid:
        pytest.fail(f"could not switch to uid {uid} in a child process to test the control socket: {result}")
    return result


def test_no_tcp_port_but_http_and_the_control_socket_answers_its_owner_only(server):
    url, pid, _ = server
    http_port = int(url.rsplit(":", 1)[1])
    listening = {(p.pid, c.laddr.port) for p in _processes(pid) for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert {port for _, port in listening} == {http_port}, f"TCP listeners besides HTTP: {listening}"

    path = _control_socket(pid)
    folder = path.parent.stat()
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.geteuid(), oct(folder.st_mode)

    other = _as_other_user(path)
    assert other["connect"] == "PermissionError" and other["answer"] is None, other
    # the owner is answered: the endpoint exists and works (the failure above is not a wrong path)
    answer = _ask(f"ipc://{path}", timeout_s=10)
    assert answer and answer["status"] == "ok" and "service" in answer["watchers"], answer


def _post(port: int, fields: list[tuple[str, str | None, bytes]], cut: bool = False,
          spread_s: float = 0) -> tuple[int, int | None]:
    """A multipart POST on a raw connection: (its local port, as the access log shows it; the
    answer's status, None when `cut`: half the body sent, then the connection closed). With
    `spread_s`, the body goes in ten pieces over that many seconds (a slow, steady upload)."""
    from benchmarks.load import multipart_body

    boundary = uuid.uuid4().hex
    body = multipart_body(boundary, fields)
    head = (f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        local = conn.getsockname()[1]
        if cut:
            conn.sendall(head + body[:len(body) // 2])
            time.sleep(0.05)  # the server has started reading the body when the client goes
            return local, None
        if spread_s:
            conn.sendall(head)
            for start in range(0, len(body), -(-len(body) // 10)):
                time.sleep(spread_s / 10)
                conn.sendall(body[start:start - (-len(body) // 10)])
        else:
            conn.sendall(head + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return local, int(answer.split(b" ", 2)[1])


def test_refused_requests_log_one_line_each_and_no_traceback(server, videos):
    url, _, log = server
    port = int(url.rsplit(":", 1)[1])
    video = next(v for v in videos if v.suffix == ".mp4").read_bytes()
    start = log.stat().st_size
    sent: dict[int, int | None] = {}
    for i in range(REFUSED):
        local, _ = _post(port, [("video", "a.mp4", video)], cut=True)
        sent[local] = None
        bad = [("top_k", None, b"0"), ("video", "a.mp4", video)] if i % 2 else [("top_k", None, b"2")]  # missing video
        local, status = _post(port, bad)
        assert status == 400, status
        sent[local] = status

    def lines() -> list[str]:
        return [line for line in log.read_text(errors="replace")[start:].splitlines() if line.strip()]

    deadline = time.monotonic() + 20
    while len(lines()) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # a traceback written after the access lines would land now
    logged = lines()
    assert not any("Traceback" in line or "[ERROR]" in line for line in logged), "\n".join(logged)
    per_request = {local: [line for line in logged if re.search(rf":{local} \(", line)] for local in sent}
    assert all(len(found) == 1 and "status=400" in found[0] for found in per_request.values()), per_request
    assert len(logged) == len(sent), "\n".join(logged)  # and nothing else


def test_server_errors_keep_their_traceback(caplog):
    """The patch quiets refusals only: an exception that becomes a 500 is logged as BentoML logs it."""
    from _bentoml_impl.server import app
    from bentoml.exceptions import BadInput
    from starlette.requests import Request

    from tiffin.serve import bentoml_patches

    bentoml_patches.install()
    request = Request({"type": "http", "method": "POST", "path": "/classify", "headers": [], "query_string": b""})
    for exc in (RuntimeError("a bug"), BadInput("top_k: bad")):
        try:
            raise exc
        except Exception:
            with caplog.at_level(logging.DEBUG):
                app.log_exception(request)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and errors[0].exc_info[0] is RuntimeError, caplog.records
    assert any(r.levelno == logging.DEBUG and "top_k: bad" in r.getMessage() for r in caplog.records)


def _trickle(conns: dict[socket.socket, float], head: bytes, until: float) -> dict[socket.socket, tuple[float, bytes]]:
    """Send `head` a byte every 0.5 s on each connection; for each one the server closed: (seconds
    from its time in `conns` to the close, what the server sent)."""
    got = {conn: b"" for conn in conns}
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    sent = 0
    while len(closed) < len(conns) and time.monotonic() < until:
        tick = time.monotonic() + 0.5
        while (left := tick - time.monotonic()) > 0:
            readable, _, _ = select.select([c for c in conns if c not in closed], [], [], left)
            for conn in readable:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                got[conn] += data
                if not data:
                    closed[conn] = (time.monotonic() - conns[conn], got[conn])
        for conn in conns:
            if conn not in closed:
                try:
                    conn.send(head[sent % len(head):sent % len(head) + 1])
                except OSError:
                    closed[conn] = (time.monotonic() - conns[conn], got[conn])
        sent += 1
    return closed


def test_slow_request_heads_are_cut_but_requests_and_slow_uploads_are_not(server, videos):
    """Slowloris: connections that never finish their request head are closed (a 408 first) after
    TIFFIN_HEADER_TIMEOUT_S, and after a response, once the keep-alive time has passed too; a normal
    request meanwhile, and an upload whose body takes longer than the timeout, are answered 200."""
    import http.client

    url, _, log = server
    port = int(url.rsplit(":", 1)[1])
    video = next(v for v in videos if v.suffix == ".mp4").read_bytes()
    start = log.stat().st_size
    head = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"  # never ends
    conns = {socket.create_connection(("127.0.0.1", port), timeout=30): time.monotonic() for _ in range(SLOW_HEADS)}
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # answered once, then slow
    kept.request("GET", "/readyz")
    answer = kept.getresponse()
    assert answer.status == 200 and not answer.will_close, answer.status
    answer.read()
    conns[kept.sock] = time.monotonic()
    slow: dict = {}
    driver = threading.Thread(target=lambda: slow.update(_trickle(conns, head, time.monotonic() + 15)))
    driver.start()
    try:
        assert _post(port, [("video", "a.mp4", video)])[1] == 200  # while the slow heads hold their connections
        assert _post(port, [("video", "a.mp4", video)], spread_s=HEADER_TIMEOUT_S + 2)[1] == 200
    finally:
        driver.join()
        for conn in conns:
            conn.close()
    assert len(slow) == len(conns), f"{len(conns) - len(slow)} slow connections still open after 15 s"
    seconds, sent = slow.pop(kept.sock)
    assert KEEP_ALIVE_S - 1 <= seconds <= KEEP_ALIVE_S + 2 and sent.startswith(b"HTTP/1.1 408 "), (seconds, sent)
    late = {round(s, 1): sent[:40] for s, sent in slow.values()
            if not (HEADER_TIMEOUT_S - 0.5 <= s <= HEADER_TIMEOUT_S + 2 and sent.startswith(b"HTTP/1.1 408 "))}
    assert not late, late
    logged = log.read_text(errors="replace")[start:]
    assert "Traceback" not in logged and "[ERROR]" not in logged, logged
