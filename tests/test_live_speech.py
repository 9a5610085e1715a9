"""Live transcription (`/transcribe/stream`, Vosk's WebSocket protocol): one real `tiffin serve` of a
tiny speech artifact for the module, real clients (the `websockets` package, `tiffin stream`),
spoken sentences (espeak-ng). The artifact's window is cut to 4 s so that a 9 s recording
commits several segments while it streams."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import running_server, tiffin, wait_until

SENTENCES = ("the old man walked home in the rain. she sells sea shells by the sea shore. "
             "a quick brown fox jumps over the lazy dog. we will meet again at noon tomorrow.")
IDLE_S = 2  # the server's TIFFIN_STREAM_IDLE_S: a stalled client is closed this soon
MAX_STREAMS = 8
MAX_AUDIO_S = 30


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """tiny-en exported to ONNX, its window cut to 4 s (stride 1 s)."""
    out = tmp_path_factory.mktemp("live") / "tiny-en"
    result = tiffin("export", "tiffin/tiny-en", "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "tiffin.json").read_text())
    meta["preprocessing"].update(chunk_seconds=4.0, stride_seconds=1.0)
    (out / "tiffin.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    """The sentences as espeak-ng says them (22.05 kHz), and as a 16 kHz 16-bit wav (`wav16`):
    the samples a 16 kHz stream of the recording sends."""
    from tiffin.audio_io import load_audio

    assert shutil.which("espeak-ng"), "espeak-ng is needed (make test installs it when run as root)"
    folder = tmp_path_factory.mktemp("speech")
    spoken = folder / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(spoken), SENTENCES], check=True,
                   capture_output=True)
    sf.write(folder / "spoken16.wav", load_audio(spoken, 16000), 16000, subtype="PCM_16")
    return {"spoken": spoken, "wav16": folder / "spoken16.wav"}


@pytest.fixture(scope="module")
def expected(artifact, speech) -> str:
    """The Python API's transcript of the 16-bit wav (what `tiffin predict` prints)."""
    import tiffin as api

    text = api.load(artifact).predict([speech["wav16"]])[0]["text"]
    assert len(text.split()) >= 8, text
    return text


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with running_server(artifact, folder, TIFFIN_STREAM_IDLE_S=IDLE_S, TIFFIN_MAX_STREAMS=MAX_STREAMS,
                        TIFFIN_MAX_AUDIO_SECONDS=MAX_AUDIO_S) as url:
        yield {"url": url, "ws": url.replace("http://", "ws://") + "/transcribe/stream", "logs": folder}


def connect(server):
    from websockets.sync.client import connect

    return connect(server["ws"], compression=None, open_timeout=10)


def closed_with(server, messages: list) -> tuple[int, str, list[dict]]:
    """(close code, reason, answers) of a stream that sends `messages`, then waits for the close."""
    from websockets.exceptions import ConnectionClosed

    answers = []
    with connect(server) as ws:
        try:
            for message in messages:
                ws.send(message)
                if isinstance(message, bytes):
                    answers.append(json.loads(ws.recv(timeout=30)))
            while True:
                answers.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason, answers


def pcm(seconds: float, rate: int = 16000) -> bytes:
    return np.zeros(int(seconds * rate), "<i2").tobytes()


def still_serving(server, speech, expected) -> None:
    from tiffin.live_client import final_text, stream_file

    assert final_text(stream_file(server["url"], speech["wav16"], chunk_seconds=0.5)) == expected


def test_a_stream_gets_partials_then_results_equal_to_predict(server, speech, expected):
    """The espeak-ng recording (22.05 kHz) streamed in 100 ms messages at the pace of real time:
    one answer per message, partials that grow before the first result, several results, and
    their texts joined are `tiffin predict`'s transcript of the 16-bit wav."""
    from tiffin.live_client import final_text, stream_file

    answers = list(stream_file(server["ws"], speech["spoken"], realtime=True))
    info = sf.info(speech["wav16"])
    seconds = info.duration
    assert len(answers) == -(-info.frames // 1600) + 1  # every message answered, and eof
    results = [k for k, a in enumerate(answers) if "text" in a]
    assert len({a["partial"] for a in answers[: results[0]]} - {""}) >= 2, answers[: results[0]]
    assert len([k for k in results if answers[k]["text"]]) >= 3 and results[-1] == len(answers) - 1
    assert final_text(answers) == expected
    words = [w for a in answers for w in a.get("result", [])]
    assert " ".join(w["word"] for w in words) == expected
    assert all(set(w) == {"word", "start", "end", "conf"} and 0 <= w["start"] < w["end"] <= seconds + 0.05
               for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


def test_concurrent_streams_each_get_their_transcript(server, speech, expected):
    """MAX_STREAMS streams at once, each faster than real time: their model calls reach the model
    worker together (batched), and every stream gets its own transcript."""
    from concurrent.futures import ThreadPoolExecutor

    from tiffin.live_client import final_text, stream_file

    def one(_: int) -> str:
        return final_text(stream_file(server["url"], speech["wav16"]))

    with ThreadPoolExecutor(MAX_STREAMS) as pool:
        assert list(pool.map(one, range(MAX_STREAMS))) == [expected] * MAX_STREAMS


def test_tiffin_stream_prints_partials_results_and_the_text(server, speech, expected):
    result = tiffin("stream", server["url"], speech["spoken"], "--realtime")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1] == f"text: {expected}"
    assert lines[0].startswith("partial: ") and any(line.startswith("final: ") for line in lines)
    finals = [line[len("final: "):] for line in lines if line.startswith("final: ")]
    assert " ".join(finals) == expected and all(line.startswith(("partial: ", "final: ")) for line in lines[:-1])
    as_json = tiffin("stream", server["url"], speech["wav16"], "--json")
    assert as_json.exit_code == 0, as_json.output
    answers = [json.loads(line) for line in as_json.output.splitlines()]
    assert " ".join(a["text"] for a in answers if a.get("text")) == expected


def vosk_client(server, audio: bytes, size: int) -> list[dict]:
    """What vosk-server's example client does: the config written with spaces, `size` bytes a
    message, each answer read before the next message goes, `{"eof" : 1}`, then the close."""
    from websockets.exceptions import ConnectionClosedOK

    answers = []
    with connect(server) as ws:
        ws.send('{ "config" : { "sample_rate" : 8000 } }')
        for k in range(0, len(audio), size):
            ws.send(audio[k : k + size])
            answers.append(json.loads(ws.recv(timeout=30)))
        ws.send('{"eof" : 1}')
        answers.append(json.loads(ws.recv(timeout=30)))
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    return answers


def test_a_vosk_client_at_8_khz_in_odd_sized_messages(server, speech):
    """8 kHz audio, resampled by the server as it comes, sent in 0.2 s messages of an odd byte
    count (samples split across messages) and in 0.1 s ones: the same results either way."""
    from tiffin.audio_io import load_audio
    from tiffin.live_client import final_text, pcm16

    audio = pcm16(load_audio(speech["spoken"], 8000))
    odd, even = vosk_client(server, audio, 3201), vosk_client(server, audio, 1600)
    assert len(odd) == -(-len(audio) // 3201) + 1 and all(len(a) == 1 or "result" in a for a in odd)
    assert [a for a in odd if "text" in a and a["text"]] == [a for a in even if "text" in a and a["text"]]
    assert len(final_text(odd).split()) >= 8


@pytest.mark.parametrize("messages, code, says", [
    (['{"config": '], 1007, "not JSON"),
    (['{"config": {"sample_rate": "16k"}}'], 1007, "sample_rate \"16k\": give the audio's rate"),
    (['{"config": {"sample_rate": 4000}}'], 1007, "from 8000 to 192000"),
    (['{"config": {"sample_rate": 16000, "words": "yes"}}'], 1007, "config.words"),
    ([pcm(0.1), '{"config": {"sample_rate": 8000}}'], 1007, "already at 16000 Hz"),
    ([pcm(0.1), '{"partial": "hello"}'], 1003, "neither {\"config\": ...} nor {\"eof\": 1}"),
    ([b"\0" * ((1 << 20) + 2)], 1009, "at most 1 MiB"),
], ids=["malformed-json", "rate-not-a-number", "rate-out-of-range", "words-not-bool", "rate-changed",
        "unexpected-text", "message-too-large"])
def test_bad_messages_are_closed_with_a_code_and_reason(server, messages, code, says):
    got, reason, _ = closed_with(server, messages)
    assert (got, says in reason) == (code, True), reason


def test_audio_past_the_limit_gets_its_result_then_1008(server):
    got, reason, answers = closed_with(server, [pcm(20), pcm(20)])
    assert got == 1008 and "TIFFIN_MAX_AUDIO_SECONDS" in reason and f"{MAX_AUDIO_S} s" in reason, reason
    assert "text" in answers[-1] and all("partial" in a for a in answers[:-1])  # the result, then the close


def test_a_stalled_client_is_closed_and_others_are_served(server, speech, expected):
    started = time.monotonic()
    got, reason, answers = closed_with(server, ['{"config": {"sample_rate": 16000}}', pcm(0.1)])
    assert got == 1008 and f"no message for {IDLE_S} s" in reason, reason
    assert IDLE_S - 0.5 < time.monotonic() - started < IDLE_S + 10 and answers == [{"partial": ""}]
    still_serving(server, speech, expected)


def test_an_abrupt_disconnect_leaves_the_server_serving(server, speech, expected):
    audio = sf.read(speech["wav16"], dtype="int16")[0].tobytes()
    for answered in (False, True):
        with connect(server) as ws:
            ws.send(audio[:64000])
            if answered:
                ws.recv(timeout=30)
            ws.send(audio[64000:128000])  # being transcribed when the connection goes
            ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just ends
    still_serving(server, speech, expected)


def test_streams_past_the_cap_are_told_to_try_later(server, speech, expected):
    with ExitStack() as streams:
        for _ in range(MAX_STREAMS):
            ws = streams.enter_context(connect(server))
            ws.send(pcm(0.1))
            ws.recv(timeout=30)
        got, reason, _ = closed_with(server, [pcm(0.1)])
        assert got == 1013 and "TIFFIN_MAX_STREAMS" in reason, reason
    # the closed streams' places are free again once the server has seen them go
    assert wait_until(lambda: closed_with(server, ['{"eof": 1}'])[0] == 1000, 10)
    still_serving(server, speech, expected)


def test_the_openapi_document_points_to_the_protocol(server):
    with urllib.request.urlopen(server["url"] + "/docs.json", timeout=30) as response:
        spec = json.loads(response.read())
    live = spec["x-websockets"]["/transcribe/stream"]
    assert "Vosk" in live["summary"] and "Live transcription" in live["docs"]
    assert set(live["close_codes"]) == {"1000", "1003", "1007", "1008", "1009", "1011", "1013"}


def test_client_errors_are_one_line(server, speech, tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    refused = tiffin("stream", f"127.0.0.1:{port}", speech["wav16"])
    assert refused.exit_code == 1 and refused.output.startswith(f"error: ws://127.0.0.1:{port}/transcribe/stream: "
                                                                "cannot connect"), refused.output
    assert len(refused.output.strip().splitlines()) == 1
    missing = tiffin("stream", server["url"], tmp_path / "missing.wav")
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1, missing.output


def test_the_server_logged_no_traceback(server):
    logs = "".join(p.read_text() for p in server["logs"].glob("server-*.log"))
    assert "/transcribe/stream" in logs and "Traceback" not in logs and "[ERROR]" not in logs
