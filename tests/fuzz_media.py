"""Fuzz the media decoders with mutated files: `python -m tests.fuzz_media SEED_DIR EXAMPLES`.

Run in a process of its own by tests/test_fuzz.py, under an address-space limit, so that a
decoder crash (a signal) or runaway memory shows as that process failing. Each example takes a
good seed file, mutates its bytes (flips, overwrites, cuts, insertions, repeated chunks), and
hands it to every entry point that reads user media: the only exception allowed out is
MediaError. Prints a JSON line with how many examples ran and what they ended in.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tiffin.audio_io import audio_duration, read_audio
from tiffin.errors import MediaError
from tiffin.video_io import decode_clip, is_video_file, probe

ADDRESS_SPACE_LIMIT = 6 * 2**30  # bytes; FFmpeg's threads reserve address space, so not lower

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=256)),
    st.tuples(st.just("repeat"), st.floats(0, 1), st.integers(1, 4096)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in mutations:
        at = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[at] ^= arg or 1
        elif kind == "overwrite":
            buf[at : at + len(arg)] = arg
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = arg
        elif kind == "repeat":
            buf[at:at] = buf[at : at + arg]
    return bytes(buf)


def read_everywhere(path: Path, audio: bool) -> None:
    """What prediction, training and serving do with a user's file of that kind."""
    if audio:
        audio_duration(path)
        read_audio(path)
    else:
        info = probe(path)
        decode_clip(path, info.duration / 3, 1.0, 4, 64)


def main(seed_dir: Path, examples: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    seeds = sorted(p for p in seed_dir.iterdir() if p.is_file())
    contents = {p: p.read_bytes() for p in seeds}
    outcomes: Counter = Counter()
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))

    @seed(20261125)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(seeds), st.lists(mutation, min_size=1, max_size=4))
    def one(source: Path, mutations: list[tuple]) -> None:
        path = work / f"mutated{source.suffix}"
        path.write_bytes(mutate(contents[source], mutations))
        try:
            read_everywhere(path, audio=not is_video_file(source))
            outcomes["read"] += 1
        except MediaError as err:
            assert "\n" not in str(err)
            outcomes["MediaError"] += 1

    one()
    print(json.dumps({"examples": sum(outcomes.values()), **outcomes}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
