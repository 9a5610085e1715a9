"""Which artifacts may load: ONNX ones are data; TorchScript, mobile and .pt2 ones are programs.

Opening a program artifact runs what its maker put in it (a TorchScript module can write files;
a .pt2 holds an op graph and may hold pickles), so it loads only when someone vouched for it:
a key trusted here signed it (tiffin/signing.py: `tiffin export` signs with the user's own key),
or the user names it explicitly (`--trust ARTIFACT`, `TIFFIN_TRUST=PATH[:PATH...]`,
`tiffin.load(path, trust=True)`). Which formats are programs is the `program` column of
tiffin.runtimes' table; tiffin.host.open_session, where every command, the Python API and the
export's own parity gate open a session, asks `require_trust` first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from tiffin.errors import TiffinError

TRUST_ENV = "TIFFIN_TRUST"


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def trusted_by_env(path: str | Path) -> bool:
    """Whether $TIFFIN_TRUST (artifact folders separated by os.pathsep) names `path`."""
    return any(_same(named, path) for named in os.environ.get(TRUST_ENV, "").split(os.pathsep) if named)


def named(artifact: str | Path, given: Sequence[str | Path] | None) -> bool:
    """Whether the `--trust` options of a command name `artifact`, the model it opens.

    Raises:
        TiffinError: a --trust that names something else (a typo must not pass silently).
    """
    for path in given or ():
        if not _same(path, artifact):
            raise TiffinError(f"--trust {path}: names no artifact this command opens (it opens {artifact}); "
                              f"give --trust {artifact}")
    return bool(given)


def require_trust(path: str | Path, format: str, trust: bool = False) -> str:
    """How a program artifact is trusted: "explicit" (named by the caller or $TIFFIN_TRUST), else
    the fingerprint of the trusted key that signed it.

    Raises:
        TiffinError: nobody vouched for it; says why (unsigned, untrusted key, tampered) and what to do.
    """
    if trust or trusted_by_env(path):
        logging.getLogger("tiffin").info(f"{path}: {format} artifact trusted explicitly, signature not checked")
        return "explicit"
    from tiffin.signing import SignatureError, verify_artifact

    try:
        return verify_artifact(path)
    except SignatureError as err:
        raise TiffinError(f"{path}: a {format} artifact is a program (loading it runs its code) and it is "
                          f"{err.reason}; pass --trust {path} (or TIFFIN_TRUST={path}, or trust=True) if you trust "
                          "who made it, or have them sign it with their key and `tiffin trust add` that key") from None
