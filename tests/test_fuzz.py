"""Fuzzing, bounded: mutated media through every decoder entry point (in a process of its own under
a memory limit), and random or mangled requests against a running `tiffin serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from benchmarks.load import multipart_body
from tests.fuzz_media import mutate, mutation
from tests.media_corpus import LIMITS
from tests.helpers import running_server

ROOT = Path(__file__).resolve().parent.parent
DECODER_EXAMPLES = 3000
REQUEST_EXAMPLES = 1000


def test_decoders_take_mutated_media_without_crashing(videos, recordings, media_corpus, tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for file in [*videos, *recordings[:2], *(p for c, p in media_corpus if c.name in ("ogg vorbis", "24-bit wav"))]:
        shutil.copy(file, seeds / f"{len(list(seeds.iterdir()))}{file.suffix}")
    assert {p.suffix for p in seeds.iterdir()} >= {".mp4", ".avi", ".webm", ".mkv", ".wav", ".ogg"}
    run = subprocess.run([sys.executable, "-m", "tests.fuzz_media", str(seeds), str(DECODER_EXAMPLES)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    # a signal (a decoder crash) or MemoryError (the address-space limit) fails the process
    assert run.returncode == 0, run.stderr[-3000:]
    outcomes = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcomes["examples"] == DECODER_EXAMPLES and outcomes["MediaError"] > 0 and outcomes["read"] > 0


def test_mangled_requests_never_get_a_5xx(artifacts, videos, tmp_path):
    good = videos[0].read_bytes()
    text = st.text(max_size=40)
    boundary = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=70)
    part = st.tuples(st.sampled_from(["video", "top_k", "other", ""]) | text, text,
                     st.builds(mutate, st.just(good), st.lists(mutation, max_size=3)) | st.binary(max_size=2000))
    request = st.one_of(
        st.tuples(st.just("random"), st.binary(max_size=5000), st.sampled_from(
            ["multipart/form-data; boundary=x", "multipart/form-data", "application/json", "application/octet-stream",
             "text/plain", "application/x-www-form-urlencoded"])),
        st.tuples(st.just("multipart"), st.tuples(boundary, st.lists(part, min_size=1, max_size=3)), st.just("")),
        st.tuples(st.just("mangled"), st.tuples(boundary, st.lists(part, min_size=1, max_size=2), st.integers(0, 10_000),
                                                st.binary(min_size=1, max_size=32)), st.just("")),
    )
    statuses: dict[int, int] = {}

    with running_server(artifacts["video"], tmp_path, **LIMITS) as url:
        import httpx

        client = httpx.Client(timeout=60)

        @seed(20261125)
        @settings(max_examples=REQUEST_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(request, st.sampled_from(["", "?top_k=3", "?top_k=-1", "?video=/etc/passwd", "?x=%00"]))
        def one(case, query: str) -> None:
            kind, payload, content_type = case
            if kind == "random":
                body = payload
            else:
                body = multipart_body(payload[0], payload[1])
                content_type = f"multipart/form-data; boundary={payload[0]}"
                if kind == "mangled":  # bytes overwritten somewhere in the framing
                    at = payload[2] % max(len(body), 1)
                    body = body[:at] + payload[3] + body[at + len(payload[3]) :]
            try:
                answer = client.post(url + "/classify" + query, content=body, headers={"Content-Type": content_type})
            except httpx.HTTPError as exc:  # a header httpx itself refuses to send is not a server problem
                if isinstance(exc, httpx.LocalProtocolError):
                    return
                raise
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, (kind, answer.status_code, answer.text[:300])

        one()
        client.close()
        assert urllib.request.urlopen(url + "/readyz").status == 200
    assert sum(statuses.values()) >= REQUEST_EXAMPLES * 0.9 and len(statuses) >= 2, statuses


def test_readme_states_the_fuzzing_counts():
    readme = (ROOT / "README.md").read_text()
    assert f"**Fuzzed decoders: {DECODER_EXAMPLES:,} mutated files**" in readme
    assert f"**and {REQUEST_EXAMPLES:,} generated** by hypothesis" in readme
