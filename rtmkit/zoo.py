"""Fetching official weights: ``resolve_weights`` turns what a user passes as ``weights=`` (a path, a model
name of :mod:`rtmkit.catalog` or a URL) into a local file, downloading into ``cache_dir()`` once and checking the
SHA-256 prefix. Only the standard library and tqdm are used here (and the stdlib-only catalog), so importing
this module stays cheap (the CLI lists models without loading torch).
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .catalog import MODELS, ModelEntry, UnsupportedModelError, list_models, lookup

__all__ = ["DownloadError", "UnsupportedModelError", "cache_dir", "download", "list_models", "resolve_weights"]

# OpenMMLab/torch.hub file names end in "-<sha256 prefix>.pth"; 8 hex digits in every published RTMDet file.
_HASH_IN_FILE_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
_URL_SCHEMES = ("http://", "https://", "file://")
_CHUNK = 1 << 20
_USER_AGENT = f"rtmkit-zoo (Python-urllib/{sys.version_info.major}.{sys.version_info.minor})"


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, truncated body or hash mismatch)."""


# ----------------------------------------------------------------------------------------------------
# Cache and download
# ----------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """$RTMKIT_CACHE if set, else $XDG_CACHE_HOME/rtmkit, else ~/.cache/rtmkit (created on demand)."""
    if os.environ.get("RTMKIT_CACHE"):
        path = Path(os.environ["RTMKIT_CACHE"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "rtmkit"
    else:
        path = Path.home() / ".cache" / "rtmkit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_name_from_url(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not name or name in (".", ".."):
        raise ValueError(f"cannot take a file name from URL {url!r}")
    return name


def _hash_prefix_from_name(file_name: str) -> str | None:
    match = _HASH_IN_FILE_NAME.search(file_name)
    return match.group(1) if match else None


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_help(url: str, dest: Path, reason: str) -> str:
    return (f"could not download {url}: {reason}.\n"
            "The machine may be offline, or the server unreachable or refusing the request. To proceed, "
            "download the file by other means (a browser, another machine) and either pass its path as "
            f'weights="path/to/{dest.name}" or put it in the cache as {dest}.')


def download(url: str, dest: Path, sha256_prefix: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Download ``url`` (http, https or file) to ``dest`` and return ``dest``.

    The body is streamed to ``<dest>.part`` in the same folder and only renamed to ``dest`` once complete and,
    when ``sha256_prefix`` is given, once its SHA-256 starts with it; so ``dest`` never holds a partial file.
    Every failure raises ``DownloadError`` and removes the ``.part`` file."""
    # Not torch.hub.download_url_to_file: it takes no timeout (a stalled server hangs it), sends its own
    # User-Agent, and keeps a body cut short when no hash is given; test_zoo.py checks all three.
    dest = Path(dest)
    expected = sha256_prefix.lower() if sha256_prefix else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]+", expected):
        raise ValueError(f"sha256_prefix must be hex digits, got {sha256_prefix!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    total: int | None = None
    received = 0
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length_header = response.headers.get("Content-Length")
                total = int(length_header) if length_header and length_header.isdigit() else None
                if progress:
                    print(f"Downloading {url} to {dest}", file=sys.stderr)
                # disable=None lets tqdm switch itself off when stderr is not a terminal.
                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                           disable=None if progress else True)
                with bar, open(part, "wb") as out:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            raise DownloadError(_offline_help(url, dest, f"HTTP error {exc.code} {exc.reason}")) from exc
        except urllib.error.URLError as exc:
            raise DownloadError(_offline_help(url, dest, str(exc.reason))) from exc
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts and resets while reading the body, and malformed HTTP responses.
            raise DownloadError(_offline_help(url, dest, f"{type(exc).__name__}: {exc}")) from exc
        # http.client returns a short body without error when the server closes early: check the length.
        if total is not None and received != total:
            reason = f"connection closed after {received} of {total} bytes"
            raise DownloadError(_offline_help(url, dest, reason))
        actual = digest.hexdigest()
        if expected is not None and not actual.startswith(expected):
            raise DownloadError(f"SHA-256 mismatch for {url}: expected a hash starting with {expected}, "
                                f"got {actual}. The file was corrupted in transit or replaced upstream; the "
                                "partial download was deleted.")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    return dest


# ----------------------------------------------------------------------------------------------------
# weights= resolution
# ----------------------------------------------------------------------------------------------------

def _accepted_forms(spec: str) -> str:
    examples = ", ".join(list_models("detect")[:6])
    hint = ""
    close = difflib.get_close_matches(spec.lower(), list(MODELS), n=3, cutoff=0.6)
    if close:
        hint = f"\nDid you mean: {', '.join(close)}?"
    return (f"weights={spec!r} is not an existing file, a zoo name or a URL. Accepted forms:\n"
            '  - a local checkpoint file: weights="path/to/checkpoint.pth"\n'
            '  - a model name: weights="rtmdet-s" (all names: `rtmkit models`)\n'
            '  - an http(s):// or file:// URL: weights="https://.../model-1a2b3c4d.pth"\n'
            f"Some zoo names: {examples}.{hint}")


def _cached_download(url: str, sha256_prefix: str | None, progress: bool) -> Path:
    """``cache_dir()/<file name>``: reuse it when present (and matching the hash, if known), else download."""
    dest = cache_dir() / _file_name_from_url(url)
    if dest.is_file():
        if sha256_prefix is None or _sha256_of_file(dest).startswith(sha256_prefix.lower()):
            return dest
        print(f"Cached {dest} does not match its SHA-256 prefix {sha256_prefix}; downloading it again.",
              file=sys.stderr)
    return download(url, dest, sha256_prefix=sha256_prefix, progress=progress)


def resolve_weights(spec: str | os.PathLike[str], progress: bool = True) -> Path:
    """Turn a ``weights=`` value into a local checkpoint file.

    - an existing file path -> that path;
    - a zoo name (``list_models()``) -> ``cache_dir()/<file name>``, downloaded once and hash-checked;
      a reserved name raises ``UnsupportedModelError``;
    - an http(s):// or file:// URL -> cached download, hash-checked when the file name ends in
      ``-<8 hex>.pth``.

    Raises ``FileNotFoundError`` for anything else (the message lists the accepted forms) and
    ``DownloadError`` when a download fails (the message says how to proceed offline)."""
    if not isinstance(spec, str):  # a PathLike is always meant as a local path
        path = Path(spec).expanduser()
        if path.is_file():
            return path
        raise FileNotFoundError(_accepted_forms(os.fspath(spec)))

    if spec.startswith(_URL_SCHEMES):
        return _cached_download(spec, _hash_prefix_from_name(_file_name_from_url(spec)), progress)
    if "://" in spec:
        raise FileNotFoundError(f"unsupported URL scheme in weights={spec!r}; only http://, https:// and "
                                "file:// URLs are downloaded.\n" + _accepted_forms(spec))

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise FileNotFoundError(f"weights={spec!r} is a directory; expected a checkpoint file.")

    entry: ModelEntry | None = lookup(spec)
    if entry is None:
        raise FileNotFoundError(_accepted_forms(spec))
    if entry.weights is None:
        raise FileNotFoundError(f"{entry.name!r} has no official weights: {entry.notes}. Pass a checkpoint file.")
    if not entry.supported:
        raise UnsupportedModelError(
            f"{entry.name!r} is a reserved name: its model family ({entry.task}) is not yet supported by "
            f"rtmkit, so its weights are not fetched. {entry.notes}. Upstream file: {entry.weights.url}")
    return _cached_download(entry.weights.url, entry.weights.sha256_prefix, progress)

