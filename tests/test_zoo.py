"""rtmkit.zoo: the checkpoint table, and the download/cache code against a real local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from rtmkit import zoo
from rtmkit.catalog import MODELS, Pretrained
from rtmkit.zoo import DownloadError, UnsupportedModelError, download, resolve_weights


def _serve_weights(monkeypatch: pytest.MonkeyPatch, name: str, url: str, sha256_prefix: str | None) -> None:
    """Point the table's weights of ``name`` at ``url`` for one test."""
    entry = MODELS[name]
    weights = Pretrained(url, sha256_prefix, entry.weights.metrics if entry.weights else {})
    monkeypatch.setitem(MODELS, name, dataclasses.replace(entry, weights=weights))

SLOW_DELAY_S = 2.0  # how long the "/slow/" route stalls; the client timeout in that test is far shorter


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the temp folder; counts requests; two test routes: a truncated body and a stalled response."""

    timeout = 10  # never let a stuck client hold a server thread for long

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server: _CountingServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.requests.append((self.path, self.headers.get("User-Agent", "")))
        if self.path.startswith("/truncated/"):
            # Promise 1000 bytes, send 10 and close: the client must notice the short body.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        if self.path.startswith("/slow/"):
            time.sleep(SLOW_DELAY_S)
            try:
                self.send_error(503)
            except OSError:  # the client gave up long ago, as intended
                pass
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.root = root

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_CountingServer]:
    root = tmp_path / "served"
    root.mkdir()
    srv = _CountingServer(root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("RTMKIT_CACHE", str(path))
    return path


def _hashed_file(folder: Path, stem: str, size: int = 300_000, seed: int = 0) -> tuple[Path, bytes, str]:
    """A file named ``<stem>-<first 8 hex of its sha256>.pth`` holding deterministic pseudo-random bytes."""
    data = b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(size // 32 + 1))[:size]
    sha = hashlib.sha256(data).hexdigest()
    path = folder / f"{stem}-{sha[:8]}.pth"
    path.write_bytes(data)
    return path, data, sha


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block exits: connecting is refused


# ---------------------------------------------------------------------------------------------------
# Downloads over HTTP
# ---------------------------------------------------------------------------------------------------

def test_url_download_checks_hash_and_is_cached(server: _CountingServer, cache: Path) -> None:
    src, data, _ = _hashed_file(server.root, "model", size=2_500_000)  # several 1 MiB chunks
    url = f"{server.base_url}/{src.name}"

    path = resolve_weights(url, progress=True)
    assert path == cache / src.name
    assert path.read_bytes() == data
    assert server.count == 1
    assert server.requests[0][1].startswith("rtmkit")  # we send our own User-Agent
    assert _leftovers(cache) == [src.name]  # no .part left behind

    # Second resolve: served from the cache, the server sees no new request.
    assert resolve_weights(url, progress=False) == path
    assert server.count == 1


def test_corrupted_cache_file_is_downloaded_again(server: _CountingServer, cache: Path) -> None:
    src, data, _ = _hashed_file(server.root, "model")
    url = f"{server.base_url}/{src.name}"
    path = resolve_weights(url, progress=False)
    path.write_bytes(b"garbage")

    assert resolve_weights(url, progress=False).read_bytes() == data
    assert server.count == 2


def test_cached_file_without_hash_is_trusted(server: _CountingServer, cache: Path) -> None:
    (server.root / "plain.pth").write_bytes(b"weights")
    url = f"{server.base_url}/plain.pth"
    assert resolve_weights(url, progress=False).read_bytes() == b"weights"
    assert resolve_weights(url, progress=False).read_bytes() == b"weights"
    assert server.count == 1


def test_hash_mismatch_leaves_no_file(server: _CountingServer, cache: Path) -> None:
    (server.root / "model-deadbeef.pth").write_bytes(b"these bytes do not hash to deadbeef")
    actual = hashlib.sha256(b"these bytes do not hash to deadbeef").hexdigest()
    url = f"{server.base_url}/model-deadbeef.pth"

    with pytest.raises(DownloadError) as info:
        resolve_weights(url, progress=False)
    message = str(info.value)
    assert url in message and "deadbeef" in message and actual in message
    assert _leftovers(cache) == []


def test_download_explicit_hash_prefix(server: _CountingServer, tmp_path: Path) -> None:
    (server.root / "plain.pth").write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    dest = tmp_path / "out" / "plain.pth"

    url = f"{server.base_url}/plain.pth"
    assert download(url, dest, sha256_prefix=sha[:8].upper(), progress=False) == dest
    assert dest.read_bytes() == b"abc"

    other = tmp_path / "out" / "other.pth"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download(f"{server.base_url}/plain.pth", other, sha256_prefix="00000000", progress=False)
    assert not other.exists() and not other.with_name("other.pth.part").exists()


def test_existing_destination_survives_a_failed_download(server: _CountingServer, tmp_path: Path) -> None:
    dest = tmp_path / "keep.pth"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(f"{server.base_url}/missing.pth", dest, progress=False)
    assert dest.read_bytes() == b"old"


def _assert_offline_help(message: str, url: str) -> None:
    assert url in message
    assert "offline" in message
    assert "weights=" in message


def test_http_404_is_a_download_error(server: _CountingServer, cache: Path) -> None:
    url = f"{server.base_url}/missing-0badf00d.pth"
    with pytest.raises(DownloadError) as info:
        resolve_weights(url, progress=False)
    _assert_offline_help(str(info.value), url)
    assert "404" in str(info.value)
    assert str(cache / "missing-0badf00d.pth") in str(info.value)  # says where to put a manual download
    assert _leftovers(cache) == []


def test_connection_refused_is_a_download_error(cache: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/model-12345678.pth"
    with pytest.raises(DownloadError) as info:
        resolve_weights(url, progress=False)
    _assert_offline_help(str(info.value), url)
    assert _leftovers(cache) == []


def test_truncated_body_is_a_download_error(server: _CountingServer, cache: Path) -> None:
    url = f"{server.base_url}/truncated/model.pth"
    with pytest.raises(DownloadError, match="10 of 1000 bytes"):
        resolve_weights(url, progress=False)
    assert _leftovers(cache) == []


def test_timeout_is_a_download_error(server: _CountingServer, tmp_path: Path) -> None:
    url = f"{server.base_url}/slow/model.pth"
    out = tmp_path / "out"
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(url, out / "model.pth", progress=False, timeout=0.3)
    assert time.monotonic() - start < SLOW_DELAY_S
    _assert_offline_help(str(info.value), url)
    assert "timed out" in str(info.value)
    assert _leftovers(out) == []


# ---------------------------------------------------------------------------------------------------
# file:// URLs, local paths, zoo names, bad input
# ---------------------------------------------------------------------------------------------------

def test_file_url(tmp_path: Path, cache: Path) -> None:
    src, data, _ = _hashed_file(tmp_path, "local")
    path = resolve_weights(src.as_uri(), progress=False)
    assert path == cache / src.name and path.read_bytes() == data

    with pytest.raises(DownloadError) as info:
        resolve_weights((tmp_path / "absent-12345678.pth").as_uri(), progress=False)
    assert "weights=" in str(info.value)

    bad = tmp_path / "bad-00000000.pth"
    bad.write_bytes(b"x")
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        resolve_weights(bad.as_uri(), progress=False)
    assert not (cache / bad.name).exists()


def test_existing_path_is_returned_as_is(tmp_path: Path, cache: Path) -> None:
    ckpt = tmp_path / "my.pth"
    ckpt.write_bytes(b"w")
    assert resolve_weights(ckpt) == ckpt
    assert resolve_weights(str(ckpt)) == ckpt
    assert _leftovers(cache) == []
    with pytest.raises(FileNotFoundError):
        resolve_weights(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="directory"):
        resolve_weights(str(tmp_path))


def test_zoo_name_downloads_once(
        server: _CountingServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, data, sha = _hashed_file(server.root, "rtmdet_tiny_fake")
    url = f"{server.base_url}/{src.name}"
    _serve_weights(monkeypatch, "rtmdet-tiny", url, sha[:8])

    path = resolve_weights("rtmdet-tiny", progress=False)
    assert path == cache / src.name and path.read_bytes() == data
    assert resolve_weights("RTMDet_Tiny", progress=False) == path  # lenient about case and underscores
    assert server.count == 1


def test_zoo_entry_hash_is_enforced(
        server: _CountingServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (server.root / "weights.pth").write_bytes(b"not the published file")
    url = f"{server.base_url}/weights.pth"
    _serve_weights(monkeypatch, "rtmdet-s", url, "387a891e")
    with pytest.raises(DownloadError, match="387a891e"):
        resolve_weights("rtmdet-s", progress=False)
    assert _leftovers(cache) == []


def test_reserved_entry_is_refused_without_download(
        server: _CountingServer, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (server.root / "rot.pth").write_bytes(b"x")
    sha = MODELS["rtmdet-r-tiny-hrsc"].weights.sha256_prefix
    _serve_weights(monkeypatch, "rtmdet-r-tiny-hrsc", f"{server.base_url}/rot.pth", sha)
    with pytest.raises(UnsupportedModelError, match="not yet supported") as info:
        resolve_weights("rtmdet-r-tiny-hrsc", progress=False)
    assert isinstance(info.value, NotImplementedError)
    assert "rtmdet-r-tiny-hrsc" in str(info.value) and "reserved" in str(info.value)
    assert server.count == 0


def test_garbage_spec_lists_accepted_forms(cache: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        resolve_weights("rtmdet-tinny")
    message = str(info.value)
    assert "rtmdet-tinny" in message
    assert "path" in message and "zoo name" in message and "http" in message and "file://" in message
    assert "rtmdet-tiny" in message  # a few names, and the close match
    assert "Did you mean" in message

    with pytest.raises(FileNotFoundError, match="unsupported URL scheme"):
        resolve_weights("ftp://example.org/model.pth")


# ---------------------------------------------------------------------------------------------------
# cache_dir, list_models
# ---------------------------------------------------------------------------------------------------

def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTMKIT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "a" and (tmp_path / "a").is_dir()

    monkeypatch.delenv("RTMKIT_CACHE")
    assert zoo.cache_dir() == tmp_path / "xdg" / "rtmkit"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "rtmkit"


def test_list_models() -> None:
    assert zoo.list_models() == list(MODELS)
    detect = zoo.list_models("detect")
    assert "rtmdet-s" in detect and "rtmdet-ins-s" not in detect
    assert zoo.list_models("segment") == [f"rtmdet-ins-{s}" for s in ("tiny", "s", "m", "l", "x")]
    assert set(zoo.list_models("classify")) == {f"cspnext-{s}" for s in ("tiny", "s", "m", "l", "x")}
    with pytest.raises(ValueError, match="unknown task"):
        zoo.list_models("pose")


# ---------------------------------------------------------------------------------------------------
# The table itself
# ---------------------------------------------------------------------------------------------------

def test_table_hashes_match_file_names() -> None:
    for name, entry in MODELS.items():
        if entry.weights is None:
            continue
        match = re.search(r"-([0-9a-f]{8})\.pth$", entry.weights.file_name)
        assert entry.weights.sha256_prefix == (match.group(1) if match else None), name
        assert entry.weights.file_name == entry.weights.url.rsplit("/", 1)[1]


def test_table_fields() -> None:
    from rtmkit.config import TASKS

    for name, entry in MODELS.items():
        assert entry.name == name and entry.task in TASKS, name
        if entry.config is not None:  # a buildable name: its config says what the table says
            assert entry.config.name == entry.arch and entry.config.task == entry.task, name
        if entry.arch != name:  # "<arch>.<tag>": other weights for a listed architecture
            assert name.startswith(entry.arch + ".") and entry.arch in MODELS, name
        if entry.weights is None:
            assert entry.config is not None and entry.notes, name  # say why there are no weights
            continue
        assert entry.weights.url.startswith("https://"), name
        assert entry.weights.metrics and all(isinstance(v, float) for v in entry.weights.metrics.values()), name
        if entry.task == "rotated":  # DOTA models are built; the 1-class HRSC one is still reserved
            assert entry.supported == (entry.arch != "rtmdet-r-tiny-hrsc"), name
        if entry.task == "segment":
            assert entry.supported and entry.config is not None, name
    file_names = [entry.weights.file_name for entry in MODELS.values() if entry.weights is not None]
    assert len(set(file_names)) == len(file_names)  # distinct files in the flat cache folder


def test_table_has_every_official_detector() -> None:
    from rtmkit.catalog import CONFIGS

    for size in ("tiny", "s", "m", "l", "x", "x-p6"):
        entry = MODELS[f"rtmdet-{size}"]
        assert entry.supported and entry.task == "detect"
        assert entry.arch in CONFIGS and entry.weights is not None
    assert MODELS["rtmdet-x-p6"].weights.metrics["box_ap"] == 54.9
    assert MODELS["rtmdet-nano-person"].supported and MODELS["rtmdet-nano-person"].arch in CONFIGS
    assert MODELS["rtmdet-tiny"].weights.url == (
        "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_tiny_8xb32-300e_coco/"
        "rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth")


def test_zoo_and_catalog_do_not_import_torch() -> None:
    # The CLI imports the table and the downloader to list models: they must not pull in torch or model code.
    import subprocess
    import sys

    code = ("import sys, rtmkit.zoo, rtmkit.catalog; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'cv2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rtmdet_weights_true_downloads_real_checkpoint(
        server: _CountingServer, cache: Path, monkeypatch: pytest.MonkeyPatch, shared) -> None:
    """End to end: RTMDet(name, weights=True) resolves the zoo entry, downloads it from a local server (hash
    checked), caches it, and gives the same detections as loading the file directly."""
    import hashlib
    import shutil

    from rtmkit import RTMDet

    src = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    served = server.root / f"rtmdet_nano_person-{sha[:8]}.pth"
    shutil.copyfile(src, served)
    _serve_weights(monkeypatch, "rtmdet-nano-person", f"{server.base_url}/{served.name}", sha[:8])

    image = str(shared("data/coco_tiny/val2017/000000300039.jpg"))
    downloaded = RTMDet("rtmdet-nano-person", weights=True, device="cpu")
    assert (cache / served.name).read_bytes() == src.read_bytes()
    again = RTMDet("rtmdet-nano-person", weights="rtmdet-nano-person", device="cpu")
    assert server.count == 1  # the second model came from the cache
    direct = RTMDet("rtmdet-nano-person", weights=src, device="cpu").predict(image)[0]
    for model in (downloaded, again):
        r = model.predict(image)[0]
        assert len(r) == len(direct) > 0 and (r.boxes == direct.boxes).all()
