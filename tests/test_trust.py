"""Artifacts that are programs load only when trusted (tiffin/trust.py, tiffin/signing.py).

Each attack is an artifact built here whose model file does something when loaded or run (a
.pt2 whose weight unpickles a payload, a TorchScript module writing a file through
torch.from_file), with a tiffin.json copied from a real export and its sha256 rewritten (the
attacker writes both). Every door that opens an artifact (`tiffin predict`, `tiffin check`,
`tiffin benchmark`, `tiffin.load().predict`) must refuse it, and the file it would write must
never appear; named explicitly or signed by a trusted key, the same artifact loads.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import tiffin as tiffin_api
from tests.helpers import tiffin
from tiffin.artifact_json import sha256
from tiffin.errors import TiffinError
from tiffin.signing import sign_artifact, verify_artifact


class FileWriter(torch.nn.Module):
    """A video 'classifier' that writes `marker` whenever it runs (torch.from_file, shared, creates it)."""

    def __init__(self, marker: str, classes: int):
        super().__init__()
        self.marker, self.classes = marker, classes

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.marker, True, 8, dtype=torch.uint8)
        written.fill_(65)
        return torch.zeros(clips.shape[0], self.classes) + written[0].float() * 0


class Zeros(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.head = torch.nn.Linear(1, classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(clips.float().mean(dim=(1, 2, 3, 4)).unsqueeze(1))


def _payloads(marker: Path) -> dict[str, object]:
    """Pickled objects that write `marker` when unpickled, each through another callable."""
    code = f"open({str(marker)!r}, 'w').write('pwned')"

    class Exec:
        def __reduce__(self):
            return (builtins.exec, (code,))

    class Eval:
        def __reduce__(self):
            return (builtins.eval, (f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')",))

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return {"exec": Exec(), "eval": Eval(), "os.system": System()}


@pytest.fixture(scope="module")
def real(checkpoints, tmp_path_factory) -> dict:
    """A real TorchScript export of the video checkpoint (signed by the test session's key) and its tiffin.json."""
    out = tmp_path_factory.mktemp("trust") / "ts"
    result = tiffin("export", checkpoints["video"], "--format", "torchscript", "--out", out)
    assert result.exit_code == 0, result.output
    return {"folder": out, "meta": json.loads((out / "tiffin.json").read_text()), "ckpt": checkpoints["video"]}


def _artifact(folder: Path, meta: dict, fmt: str, write_model) -> Path:
    """An artifact folder: the model file `write_model(path)` writes and `meta` made to match it
    (its source, relative, still finds the checkpoint: `folder` sits as deep as the real export)."""
    folder.mkdir(parents=True)
    name = {"torchscript": "model.pt", "pt2": "model.pt2"}[fmt]
    write_model(folder / name)
    (folder / "tiffin.json").write_text(json.dumps({**meta, "format": fmt, "model_file": name,
                                                    "sha256": sha256(folder / name)}))
    return folder


def _writer_ts(marker: Path, classes: int):
    return lambda path: torch.jit.script(FileWriter(str(marker), classes)).save(str(path))


def _pickled_pt2(payload, classes: int):
    """A .pt2 whose first weight is a pickle (`use_pickle`: torch.export.load unpickles it, weights_only=False)."""

    def write(path: Path):
        buffer = io.BytesIO()
        torch.export.save(torch.export.export(Zeros(classes), (torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8),)), buffer)
        pickled = io.BytesIO()
        torch.save(payload, pickled)
        with zipfile.ZipFile(buffer) as src:
            members = {i.filename: src.read(i.filename) for i in src.infolist()}
        config_name = next(n for n in members if n.endswith("weights/model_weights_config.json"))
        config = json.loads(members[config_name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        members[config_name] = json.dumps(config).encode()
        members[config_name.replace("model_weights_config.json", first["path_name"])] = pickled.getvalue()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
            for name, data in members.items():
                out.writestr(name, data)

    return write


def _doors(artifact: Path, ckpt: Path, video: Path) -> dict:
    """Every way of opening an artifact -> (refused?, the one-line message)."""

    def cli(*args):
        result = tiffin(*args)
        lines = result.output.strip().splitlines()
        return result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output

    def api():
        try:
            tiffin_api.load(artifact).predict([video])
        except TiffinError as err:
            return True, str(err)
        return False, "loaded"

    return {"predict": lambda: cli("predict", artifact, video),
            "check": lambda: cli("check", artifact, "--source", ckpt),
            "api": api}


PAYLOADS = ["exec", "eval", "os.system"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_pt2_whose_weights_unpickle_a_payload_is_refused_and_the_payload_never_runs(real, videos, tmp_path, payload):
    marker = tmp_path / "pwned"
    classes = len(real["meta"]["labels"])
    art = _artifact(tmp_path / "evil", real["meta"], "pt2", _pickled_pt2(_payloads(marker)[payload], classes))
    for door, open_it in _doors(art, real["ckpt"], videos[0]).items():
        refused, message = open_it()
        assert refused and "pt2 artifact is a program" in message and "unsigned" in message, (door, message)
        assert f"--trust {art}" in message
        assert not marker.exists(), door
    # trusted explicitly it still loads weights-only: the pickle is refused, not run
    trusted = tiffin("predict", art, videos[0], "--trust", art)
    assert trusted.exit_code == 2 and "pickle" in trusted.output and not marker.exists(), trusted.output
    sign_artifact(art)  # even signed by a trusted key
    with pytest.raises(TiffinError, match="weights-only loading refuses"):
        tiffin_api.load(art).predict([videos[0]])
    assert not marker.exists()


def _untrusted_key(art: Path, tmp_path: Path, monkeypatch) -> None:
    """Sign with a key of another config folder (someone else's), then come back."""
    mine = os.environ["TIFFIN_CONFIG_DIR"]
    monkeypatch.setenv("TIFFIN_CONFIG_DIR", str(tmp_path / "someone-else"))
    sign_artifact(art)
    monkeypatch.setenv("TIFFIN_CONFIG_DIR", mine)


def _swap_model(art: Path, tmp_path: Path, monkeypatch) -> None:
    """A real signed export whose model is replaced, tiffin.json's sha256 rewritten to match."""
    (art / "model.pt").write_bytes((tmp_path / "evil" / "model.pt").read_bytes())
    meta = json.loads((art / "tiffin.json").read_text())
    (art / "tiffin.json").write_text(json.dumps({**meta, "sha256": sha256(art / "model.pt")}))


def _forge_manifest(art: Path, tmp_path: Path, monkeypatch) -> None:
    """As _swap_model, and tiffin.sig's list of hashes rewritten too (the signature cannot be)."""
    _swap_model(art, tmp_path, monkeypatch)
    signed = json.loads((art / "tiffin.sig").read_text())
    signed["files"] = {name: sha256(art / name) for name in signed["files"]}
    (art / "tiffin.sig").write_text(json.dumps(signed))


def _add_file(art: Path, tmp_path: Path, monkeypatch) -> None:
    (art / "lm.arpa").write_text("\\data\\\n")


# how the evil TorchScript artifact reaches the loader -> what the refusal says
ATTACKS = {
    "unsigned": (lambda art, tmp_path, monkeypatch: None, "unsigned"),
    "signed by an untrusted key": (_untrusted_key, "not trusted here"),
    "model swapped after signing": (_swap_model, "tampered: model.pt changed"),
    "manifest forged": (_forge_manifest, "tampered: tiffin.sig does not match"),
    "file added after signing": (_add_file, "tampered: lm.arpa was added"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_torchscript_artifact_that_writes_a_file_is_refused_unless_trusted(real, videos, tmp_path, monkeypatch,
                                                                              attack):
    marker = tmp_path / "pwned"
    evil = _artifact(tmp_path / "evil", real["meta"], "torchscript",
                     _writer_ts(marker, len(real["meta"]["labels"])))
    prepare, says = ATTACKS[attack]
    if attack in ("unsigned", "signed by an untrusted key"):
        art = evil
    else:  # the attacker edits a real artifact signed by a trusted key
        art = tmp_path / "edited"
        shutil.copytree(real["folder"], art)
    prepare(art, tmp_path, monkeypatch)
    for door, open_it in _doors(art, real["ckpt"], videos[0]).items():
        refused, message = open_it()
        assert refused and "torchscript artifact is a program" in message and says in message, (door, message)
        assert not marker.exists(), door
    benchmarked = tiffin("benchmark", art, "--batch", "1", "--runs", "1", "--json")
    rows = [r for r in json.loads(benchmarked.stdout) if r["format"] == "torchscript"]
    assert [r["status"] for r in rows] == ["runtime failed"] and says in rows[0]["note"], benchmarked.output
    assert not marker.exists()


def test_the_same_artifact_loads_when_named_or_signed_by_a_trusted_key(real, videos, tmp_path, monkeypatch,
                                                                       config_dir):
    marker = tmp_path / "ran"
    art = _artifact(tmp_path / "evil", real["meta"], "torchscript", _writer_ts(marker, len(real["meta"]["labels"])))
    wrong = tiffin("predict", art, videos[0], "--trust", real["folder"])
    assert wrong.exit_code == 2 and f"names no artifact this command opens (it opens {art})" in wrong.output

    def ran(how: str, loads) -> None:
        marker.unlink(missing_ok=True)
        loads()
        assert marker.exists(), how  # it loaded and ran, as its maker wrote it

    ran("--trust", lambda: tiffin("predict", art, videos[0], "--trust", art))
    ran("check --trust", lambda: tiffin("check", art, "--source", real["ckpt"], "--trust", art))
    ran("benchmark --trust", lambda: tiffin("benchmark", art, "--batch", "1", "--runs", "1", "--trust", art))
    monkeypatch.setenv("TIFFIN_TRUST", f"{tmp_path / 'other'}{os.pathsep}{art}")
    ran("TIFFIN_TRUST", lambda: tiffin("predict", art, videos[0]))
    monkeypatch.delenv("TIFFIN_TRUST")
    ran("trust=True", lambda: tiffin_api.load(art, trust=True).predict([videos[0]]))
    # signed by someone whose key the user adds: in a copy of this session's config folder
    _untrusted_key(art, tmp_path, monkeypatch)
    monkeypatch.setenv("TIFFIN_CONFIG_DIR", str(tmp_path / "someone-else"))
    theirs = tiffin("trust", "key")
    (tmp_path / "theirs.pub").write_text(theirs.stdout)
    mine = tmp_path / "mine"
    shutil.copytree(config_dir, mine)  # the session's own key, and now theirs
    monkeypatch.setenv("TIFFIN_CONFIG_DIR", str(mine))
    assert tiffin("predict", art, videos[0]).exit_code == 2
    added = tiffin("trust", "add", tmp_path / "theirs.pub")
    assert added.exit_code == 0 and "trusting key" in added.output
    assert verify_artifact(art) in tiffin("trust", "list").output
    ran("a trusted key", lambda: tiffin("predict", art, videos[0]))
    assert tiffin("trust", "verify", art).exit_code == 0
    bad = tiffin("trust", "add", tmp_path / "evil" / "tiffin.json")
    assert bad.exit_code == 2 and "not a public key in PEM" in bad.output


def test_exports_are_signed_by_the_exporting_run_and_onnx_artifacts_need_no_signature(real, artifacts, videos,
                                                                                     tmp_path):
    assert verify_artifact(real["folder"])  # the session's own key: trusted without a word
    onnx = tmp_path / "onnx"
    shutil.copytree(artifacts["video"], onnx)
    (onnx / "tiffin.sig").unlink()  # ONNX is data: loads unsigned
    assert tiffin("predict", onnx, videos[0]).exit_code == 0
    unsigned = tiffin("trust", "verify", onnx)
    assert unsigned.exit_code == 2 and "unsigned" in unsigned.output
    # `tiffin benchmark --record` edits tiffin.json of a signed artifact: it signs it again
    from tiffin.export.benchmark import record_fastest

    recorded = tmp_path / "recorded"
    shutil.copytree(real["folder"], recorded)
    record_fastest(recorded, [{"format": "torchscript", "runtime": "torchscript", "status": "ok", "batch": 1,
                               "latency_ms": 1.0}])
    assert verify_artifact(recorded) and json.loads((recorded / "tiffin.json").read_text())["runtime"] == "torchscript"


@pytest.mark.parametrize("auto_map", [{"AutoModelForCTC": "modeling_evil.EvilForCTC"},
                                      {"AutoConfig": "configuration_evil.EvilConfig"}])
def test_a_hugging_face_folder_that_needs_remote_code_is_refused(tmp_path, auto_map):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "architectures": ["EvilForCTC"],
                                                    "auto_map": auto_map}))
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "A": 1}))
    (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    for args in (("predict", folder, tmp_path / "a.wav"), ("export", folder, "--out", tmp_path / "out")):
        result = tiffin(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert "auto_map" in lines[0] and "trust_remote_code" in lines[0], lines[0]
    assert not (tmp_path / "pwned").exists()
