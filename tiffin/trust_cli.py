"""`tiffin trust`: the user's signing key and the keys they trust (tiffin/signing.py, tiffin/trust.py).

Run: `tiffin trust key > me.pub` on the machine that exports, `tiffin trust add me.pub` on the
machines that load what it exported.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tiffin.errors import reported

trust_app = typer.Typer(help="Sign artifacts and choose whose signed TorchScript / mobile / .pt2 artifacts load.",
                        no_args_is_help=True)


@trust_app.command("key")
@reported
def key_command() -> None:
    """Print your public key (PEM; made on first use) for others to `tiffin trust add`."""
    from tiffin.signing import config_dir, fingerprint, public_pem, signing_key

    typer.echo(public_pem(), nl=False)
    typer.echo(f"key {fingerprint(signing_key().public_key())} ({config_dir() / 'signing_key.pem'})", err=True)


@trust_app.command("add")
@reported
def add_command(key: Path = typer.Argument(..., help="A public key file as `tiffin trust key` prints it.")) -> None:
    """Trust artifacts signed by this key (copied into the config folder's trusted_keys/)."""
    from tiffin.signing import TRUSTED_DIR, add_trusted_key, config_dir

    typer.echo(f"trusting key {add_trusted_key(key)} ({config_dir() / TRUSTED_DIR})")


@trust_app.command("list")
@reported
def list_command() -> None:
    """The keys whose signatures are trusted here: your own first."""
    from tiffin.signing import fingerprint, signing_key, trusted_keys

    own = fingerprint(signing_key().public_key())
    for key_id in trusted_keys():
        typer.echo(f"{key_id}{' (yours)' if key_id == own else ''}")


@trust_app.command("sign")
@reported
def sign_command(artifact: Path = typer.Argument(..., help="An artifact folder you vouch for.")) -> None:
    """Sign an artifact with your key, as `tiffin export` does (after you have checked it)."""
    from tiffin.artifact_json import read_artifact
    from tiffin.signing import sign_artifact

    read_artifact(artifact)  # only a complete artifact, its model file as tiffin.json says
    typer.echo(f"{artifact}: signed with key {sign_artifact(artifact)}")


@trust_app.command("verify")
@reported
def verify_command(artifact: Path = typer.Argument(..., help="An artifact folder.")) -> None:
    """Say which trusted key signed an artifact; exit 2 if none did or a file changed since."""
    from tiffin.signing import verify_artifact

    typer.echo(f"{artifact}: signed by trusted key {verify_artifact(artifact)}")
