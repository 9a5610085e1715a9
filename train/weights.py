"""Pretrained weights from where their publishers put them, through the ecosystem's own clients.

Two sources, each with the cache and environment variables its users already set:
  zoo files   one file per backbone (PyTorchVideo's .pyth, torchvision's .pth), fetched with
              torch.hub's downloader into torch.hub's cache ($TORCH_HOME/hub/checkpoints);
              `TIFFIN_WEIGHTS_MIRROR` (a base URL) replaces the publisher's scheme and host and
              keeps the path, as HF_ENDPOINT does for the Hub.
  the Hub     a Hugging Face model id (`org/name`, `org/name@revision`), fetched with
              huggingface_hub into its cache (HF_HOME / HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN for
              gated models, HF_HUB_OFFLINE=1), safetensors and configs only: tiffin loads no
              pickles and runs no model code.
Offline (`TIFFIN_OFFLINE=1` or `HF_HUB_OFFLINE=1`, or no network) a missing file is one line
naming the cache folder and `tiffin download BACKBONE`, which pre-fetches into the caches to
copy to an air-gapped machine. A download lands under a temporary name and is moved into the
cache only after it proved whole (its publisher's hash where the file name carries one, and a
weights-only load), so an interrupted or corrupted transfer leaves nothing a later load would use.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from tiffin.errors import TiffinError
from tiffin.train.backbones import hf_hub_cache, hub_checkpoint_dir

MIRROR_ENV = "TIFFIN_WEIGHTS_MIRROR"
# the files of a Hub model tiffin reads: configs, tokenizer/vocabulary files, safetensors weights
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
# never fetched with the snapshot: MMS's per-language adapters (over a thousand files, gigabytes); the one of
# the language asked for (target_lang, `adapter.<lang>.safetensors`: ADAPTER_FILE) is fetched on its own
HUB_SKIPPED = ["adapter.*.safetensors"]
ADAPTER_FILE = "adapter.{}.safetensors"
# a language code as MMS names its adapters and vocabularies (`eng`, `fra`, `cmn-script_simplified`)
LANGUAGE = re.compile(r"^[A-Za-z0-9][\w-]*$")
# `org/name` or `org/name@revision`, as the Hub spells ids (a local folder is tried first)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def offline() -> bool:
    """True when the user asked for no network: TIFFIN_OFFLINE or the Hub's own HF_HUB_OFFLINE."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("TIFFIN_OFFLINE", "HF_HUB_OFFLINE"))


def mirrored(url: str) -> str:
    """`url` with its scheme and host replaced by $TIFFIN_WEIGHTS_MIRROR's, the path kept."""
    mirror = os.environ.get(MIRROR_ENV, "").strip().rstrip("/")
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror + parts.path + (f"?{parts.query}" if parts.query else "")


def publisher_hash(url: str) -> str | None:
    """The sha256 prefix a publisher encodes in a file name (torchvision's `r3d_18-b3b3357e.pth`)."""
    from torch.hub import HASH_REGEX

    match = HASH_REGEX.search(Path(urlsplit(url).path).name)
    return match.group(1) if match else None


# torch.hub's downloader opens its connection with no timeout: a mirror that accepts and then
# stalls would hang the run. A socket that waits this long for a byte fails the download instead.
READ_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _read_timeout(seconds: float):
    import socket

    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def zoo_file(url: str, backbone: str, otherwise: str = "") -> Path:
    """The cached zoo file of `url` (torch.hub's cache, by file name), downloaded if missing.
    `otherwise`: what else the caller's user can do without the file, added to the offline errors.

    Raises:
        TiffinError: offline or unreachable with no cached copy, or a download that is not
            whole (wrong hash, truncated, not a weights file); nothing is left in the cache.
    """
    path = hub_checkpoint_dir() / Path(urlsplit(url).path).name
    if path.is_file():
        return path
    source = mirrored(url)
    if offline():
        raise TiffinError(f"--backbone {backbone}: its weights are not in the torch hub cache ({path}) and "
                          f"downloads are off (TIFFIN_OFFLINE/HF_HUB_OFFLINE); run `tiffin download {backbone}` where "
                          f"there is network and copy {path.parent}, or set {MIRROR_ENV}, or pass --weights FILE{otherwise}")
    from http.client import HTTPException

    from torch.hub import download_url_to_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TiffinError(f"--backbone {backbone}: cannot write the torch hub cache {path.parent} ({exc}); "
                          "set TORCH_HOME to a writable folder") from None
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.download")
    try:
        try:
            with _read_timeout(READ_TIMEOUT_S):
                download_url_to_file(source, str(partial), hash_prefix=publisher_hash(url), progress=sys.stderr.isatty())
        except RuntimeError as exc:  # torch.hub's "invalid hash value (expected ..., got ...)"
            raise TiffinError(f"--backbone {backbone}: {source} failed its hash check ({exc}); the file was "
                              "not kept; try again, or check the mirror") from None
        except (OSError, ValueError, HTTPException) as exc:  # URLError and HTTPError are OSErrors
            reason = _first_line(getattr(exc, "reason", None) or exc)
            raise TiffinError(f"--backbone {backbone}: cannot download {source} ({reason}); with no network, run "
                              f"`tiffin download {backbone}` where there is one and copy {path.parent}, or set "
                              f"{MIRROR_ENV}, or pass --weights FILE{otherwise}") from None
        _check_loadable(partial, source, backbone)
        try:
            os.replace(partial, path)
        except OSError as exc:
            raise TiffinError(f"--backbone {backbone}: cannot write {path} ({exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _check_loadable(path: Path, source: str, backbone: str) -> None:
    """Refuse a downloaded file that does not load as weights (a cut-short transfer of a file
    without a published hash ends here); loads with weights_only, so no code in it runs. Memory-mapped
    when it is a zip (torch.save's format since 1.6), as torch cannot map the older format of some
    zoo files; a cut-short zip lacks its closing directory and is read, and refused, the old way."""
    import zipfile

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises several types for cut-short or foreign files
        reason = _first_line(exc).split(". ")[0][:160]
        raise TiffinError(f"--backbone {backbone}: the download of {source} is not a whole weights file "
                          f"({reason}); it was not kept; try again") from None


def _first_line(exc: object) -> str:
    """An exception's message as one line (huggingface_hub's run over several), or its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def split_revision(backbone: str) -> tuple[str, str | None]:
    """`org/name@rev` -> (`org/name`, `rev`); no revision -> the Hub's default branch."""
    name, _, revision = backbone.partition("@")
    return name, revision or None


# what names a local file, never a Hub id: a checkpoint or artifact path that is not there yet
_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pyth", ".onnx", ".pt2", ".json", ".safetensors", ".ptl")


def is_hub_id(backbone: str) -> bool:
    """Whether `backbone` reads as a Hugging Face model id: `org/name[@rev]`, and not a local path
    (nothing there, no file suffix, and its first part is not a local folder)."""
    path = Path(backbone).expanduser()
    return (bool(HUB_ID.match(backbone)) and not path.exists() and not path.parent.is_dir()
            and not backbone.lower().endswith(_FILE_SUFFIXES))


def hub_model(backbone: str, target_lang: str | None = None) -> Path:
    """The local snapshot folder of a Hub model id (`org/name[@revision]`), downloaded if missing.
    `target_lang`: for a model with per-language adapters (config.json's `adapter_attn_dim`: MMS),
    that language's adapter file (`adapter.<lang>.safetensors`) too, and no other language's.

    Raises:
        TiffinError: offline with no cached copy, unknown or gated model, unknown revision, no
            adapter file for `target_lang`.
    """
    snapshot = _hub_snapshot(backbone)
    if target_lang and _needs_adapter(snapshot, target_lang):
        _hub_adapter(backbone, snapshot, target_lang)
    return snapshot


def _needs_adapter(snapshot: Path, target_lang: str) -> bool:
    """Whether the snapshot's model has per-language adapters (config.json's adapter_attn_dim: MMS) and
    `target_lang`'s is not in its weights already (a model fine-tuned by tiffin records its target_lang)."""
    import json

    try:
        config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
        return bool(config.get("adapter_attn_dim")) and config.get("target_lang") != target_lang
    except (OSError, ValueError, AttributeError):
        return False  # load_backbone says what is wrong with the config


def _hub_adapter(backbone: str, snapshot: Path, target_lang: str) -> Path:
    """A language's adapter file of a Hub model, into the snapshot folder (the same commit), if missing.

    Raises:
        TiffinError: not a language code, no such adapter file, offline with none cached, a failed download.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if not LANGUAGE.match(target_lang):
        raise TiffinError(f"--target-lang {target_lang!r}: not a language code (MMS's are like eng, fra, deu)")
    model_id, _ = split_revision(backbone)
    name = ADAPTER_FILE.format(target_lang)
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"
    try:  # the snapshot's folder name is its commit: a cached file is used with no request
        return Path(hf_hub_download(model_id, name, revision=snapshot.name, cache_dir=hf_hub_cache(),
                                    endpoint=endpoint, local_files_only=offline()))
    except LocalEntryNotFoundError:
        state = "downloads are off (HF_HUB_OFFLINE/TIFFIN_OFFLINE)" if offline() else f"{endpoint} cannot be reached"
        raise TiffinError(f"--backbone {backbone}: its {name} (--target-lang {target_lang}) is not in the Hugging "
                          f"Face cache ({snapshot}) and {state}; fetch it where there is network and copy the cache, "
                          "or give a folder with the adapter file") from None
    except EntryNotFoundError:  # RemoteEntryNotFoundError, or its cached absence
        raise TiffinError(f"--backbone {backbone}: it has no {name} on {endpoint}, so no adapter for --target-lang "
                          f"{target_lang}; give a language it has adapters for") from None
    except (OSError, ValueError, *_http_client_errors()) as exc:
        raise TiffinError(f"--backbone {backbone}: cannot download {name} from {endpoint} ({_first_line(exc)}); "
                          "try again") from None


def _hub_snapshot(backbone: str) -> Path:
    """hub_model's snapshot: configs, vocabularies and safetensors weights, no adapters."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    model_id, revision = split_revision(backbone)
    cache = hf_hub_cache()
    where = cache / ("models--" + model_id.replace("/", "--"))
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"
    try:
        # the cache and endpoint as the environment says now: huggingface_hub reads them once, at its import
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES,
                                      ignore_patterns=HUB_SKIPPED, cache_dir=cache,
                                      endpoint=endpoint, local_files_only=offline()))
    except GatedRepoError:
        raise TiffinError(f"--backbone {backbone}: the model is gated; accept its terms at {endpoint}/{model_id} "
                          "and set HF_TOKEN (or `hf auth login`)") from None
    except RevisionNotFoundError:
        raise TiffinError(f"--backbone {backbone}: {endpoint}/{model_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise TiffinError(f"--backbone {backbone}: no such model on {endpoint} (a private one needs HF_TOKEN); "
                          "check the id, or give a folder written by save_pretrained") from None
    except LocalEntryNotFoundError:
        state = "downloads are off (HF_HUB_OFFLINE/TIFFIN_OFFLINE)" if offline() else f"{endpoint} cannot be reached"
        raise TiffinError(f"--backbone {backbone}: not in the Hugging Face cache ({where}) and {state}; run "
                          f"`tiffin download {backbone}` where there is network and copy the cache, or give a "
                          "folder written by save_pretrained") from None
    except (OSError, *_http_client_errors()) as exc:  # a full disk, an unwritable cache, a Hub error, a cut transfer
        raise TiffinError(f"--backbone {backbone}: cannot download it from {endpoint} into {where} "
                          f"({_first_line(exc)}); try again") from None
    except ValueError as exc:  # huggingface_hub's HFValidationError: not an id the Hub accepts
        raise TiffinError(f"--backbone {backbone}: not a valid Hugging Face model id ({_first_line(exc)})") from None


def _http_client_errors() -> tuple[type[Exception], ...]:
    """The network errors of huggingface_hub's HTTP client that are not OSErrors (httpx2's in 2.x, httpx's in 1.x)."""
    import importlib

    errors = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def hub_cached(backbone: str) -> Path | None:
    """The cached snapshot of a Hub id (the pinned revision's, else the default branch's), or None; no network.

    A snapshot counts only when whole: huggingface_hub checks it against the file list it cached with
    the download, so one that a failed download left half-written is not returned.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    model_id, revision = split_revision(backbone)
    try:
        snapshot = Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES,
                                          ignore_patterns=HUB_SKIPPED, cache_dir=hf_hub_cache(),
                                          local_files_only=True))
    except (LocalEntryNotFoundError, ValueError):
        return None
    return snapshot if (snapshot / "config.json").is_file() else None


def download(backbone: str, target_lang: str | None = None) -> Path:
    """Fetch a backbone's pretrained weights into the caches (what `tiffin download` does), to use
    here or to copy to a machine without network; returns where they are. `target_lang`: also that
    language's adapter, for a model with per-language adapters (MMS).

    Raises:
        TiffinError: an embedded model (nothing to fetch), an unknown name, or a failed download.
    """
    from tiffin.train.backbones import EMBEDDED_MODELS, SPEECH_BACKBONES, VIDEO_BACKBONES

    if backbone in EMBEDDED_MODELS:
        raise TiffinError(f"{backbone}: is embedded in the package; there is nothing to download")
    if backbone in SPEECH_BACKBONES and SPEECH_BACKBONES[backbone].weights == "none":
        raise TiffinError(f"{backbone}: is a configuration trained from scratch, with no pretrained weights; "
                          "there is nothing to download")
    if backbone in VIDEO_BACKBONES:
        return zoo_file(VIDEO_BACKBONES[backbone].weights_url, backbone)
    if is_hub_id(backbone):
        return hub_model(backbone, target_lang=target_lang)
    raise TiffinError(f"{backbone}: not a backbone of `tiffin backbones video|speech` nor a Hugging Face model id "
                      "(org/name[@revision])")
