"""Ed25519 signatures of artifact folders, made and checked with the user's own keys, offline.

`tiffin export` signs every artifact it writes with the user's key, and a program artifact
(TorchScript, mobile, .pt2: see tiffin/trust.py) loads only when a trusted key signed it. The
user's key lives in their config folder ($TIFFIN_CONFIG_DIR, else $XDG_CONFIG_HOME/tiffin,
else ~/.config/tiffin) as `signing_key.pem` (PKCS#8, made on first use, mode 0600); the keys
trusted are its own and every `trusted_keys/*.pub` there (an Ed25519 public key in PEM, as
`tiffin trust key` prints it and `tiffin trust add` copies it). A signature (`tiffin.sig`,
JSON) covers the sha256 of every file of the folder but itself, by name: a file changed,
added or removed after signing is found. The hash in tiffin.json proves nothing on its own
(whoever changes the model rewrites it too); the signature is what an attacker cannot redo.

Torch-free; `cryptography` is imported where a key is used. Run: `tiffin trust key`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError

SIGNATURE_FILE = "tiffin.sig"
KEY_FILE = "signing_key.pem"
TRUSTED_DIR = "trusted_keys"
_VERSION = 1


class SignatureError(TiffinError):
    """An artifact no trusted key vouches for: `reason` says why (unsigned, untrusted key, tampered)."""

    def __init__(self, folder: str | Path, reason: str):
        self.folder, self.reason = str(folder), reason
        super().__init__(f"{folder}: {reason}")


def config_dir() -> Path:
    """The user's tiffin config folder: $TIFFIN_CONFIG_DIR, else $XDG_CONFIG_HOME/tiffin, else ~/.config/tiffin."""
    if os.environ.get("TIFFIN_CONFIG_DIR"):
        return Path(os.environ["TIFFIN_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "tiffin"


def _raw(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def signing_key():
    """The user's Ed25519 private key, made on first use (file 0600 in a 0700 folder).

    Raises:
        TiffinError: the key file exists and is not an Ed25519 private key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = config_dir()
    path = folder / KEY_FILE
    if not path.is_file():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
        # written whole beside it, then linked into place: two first runs at once keep one key, and
        # neither ever reads a half-written file
        tmp = folder / f".{KEY_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise TiffinError(f"{path}: not a tiffin signing key ({exc}); move it away and a new one is made") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TiffinError(f"{path}: not an Ed25519 key; move it away and a new one is made")
    return key


def public_pem() -> str:
    """The user's public key in PEM, what others add to their trusted keys (`tiffin trust key`)."""
    from cryptography.hazmat.primitives import serialization

    return signing_key().public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def read_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file.

    Raises:
        TiffinError: unreadable, or not an Ed25519 public key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise TiffinError(f"{path}: not a public key in PEM ({str(exc).splitlines()[0]}); give what "
                          "`tiffin trust key` prints") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TiffinError(f"{path}: not an Ed25519 public key; give what `tiffin trust key` prints")
    return key


def trusted_keys() -> dict[str, Any]:
    """fingerprint -> public key: the user's own and every trusted_keys/*.pub of the config folder.

    Raises:
        TiffinError: a file in trusted_keys/ that is not an Ed25519 public key (named).
    """
    own = signing_key().public_key()
    keys = {fingerprint(own): own}
    for path in sorted((config_dir() / TRUSTED_DIR).glob("*.pub")):
        key = read_public_key(path)
        keys[fingerprint(key)] = key
    return keys


def add_trusted_key(path: str | Path) -> str:
    """Copy a public key into trusted_keys/ (named by its fingerprint) and return the fingerprint.

    Raises:
        TiffinError: not an Ed25519 public key in PEM.
    """
    key = read_public_key(path)
    folder = config_dir() / TRUSTED_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / f"{fingerprint(key)}.pub").write_bytes(Path(path).read_bytes())
    return fingerprint(key)


def manifest(folder: str | Path) -> dict[str, str]:
    """name -> sha256 of every file under `folder` but the signature, names relative with '/'."""
    from tiffin.artifact_json import sha256

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != SIGNATURE_FILE)
    return {p.relative_to(folder).as_posix(): sha256(p) for p in files}


def _message(files: dict[str, str]) -> bytes:
    """The bytes signed: the manifest as canonical JSON (sorted keys, no spaces)."""
    return json.dumps({"version": _VERSION, "files": files}, sort_keys=True, separators=(",", ":")).encode()


def sign_artifact(folder: str | Path) -> str:
    """Sign every file of `folder` with the user's key into `folder`/tiffin.sig; return the key's fingerprint."""
    key = signing_key()
    files = manifest(folder)
    signed = {"version": _VERSION, "algorithm": "ed25519", "key_id": fingerprint(key.public_key()),
              "public_key": base64.b64encode(_raw(key.public_key())).decode(), "files": files,
              "signature": base64.b64encode(key.sign(_message(files))).decode()}
    tmp = Path(folder) / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps(signed, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, Path(folder) / SIGNATURE_FILE)
    return signed["key_id"]


def verify_artifact(folder: str | Path) -> str:
    """The fingerprint of the trusted key that signed `folder`, every file as it was signed.

    Raises:
        SignatureError: unsigned, signed by a key not trusted here, or a file changed, added or
            removed since signing (named).
    """
    from cryptography.exceptions import InvalidSignature

    folder = Path(folder)
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        raise SignatureError(folder, "unsigned (no tiffin.sig)")
    try:
        signed = json.loads(path.read_text(encoding="utf-8"))
        key_id, files, signature = signed["key_id"], signed["files"], base64.b64decode(signed["signature"])
        if not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
            raise TypeError("files is not a name -> sha256 object")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SignatureError(folder, f"not validly signed: tiffin.sig is not a tiffin signature ({exc!r})") from None
    key = trusted_keys().get(key_id)
    if key is None:
        raise SignatureError(folder, f"signed by key {key_id}, which is not trusted here (get its public key "
                                     f"from whoever made the artifact and run `tiffin trust add KEY.pub`)")
    try:
        key.verify(signature, _message(files))
    except InvalidSignature:
        raise SignatureError(folder, f"tampered: tiffin.sig does not match key {key_id}'s signature") from None
    found = manifest(folder)
    for name in sorted(set(files) | set(found)):
        if name not in found:
            raise SignatureError(folder, f"tampered: {name} was signed and is gone")
        if name not in files:
            raise SignatureError(folder, f"tampered: {name} was added after signing")
        if found[name] != files[name]:
            raise SignatureError(folder, f"tampered: {name} changed since it was signed (sha256 differs)")
    return key_id
