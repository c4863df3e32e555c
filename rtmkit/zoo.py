"""Official RTMDet checkpoints and how to fetch them.

``ZOO`` maps an rtmkit model name to the URL where OpenMMLab published its weights, the SHA-256 prefix that
OpenMMLab embeds in the file name (their publish scripts name files ``<stem>-<first 8 hex of sha256>.pth``,
the torch.hub convention), the task, and the metrics from the upstream metafiles/READMEs.

``resolve_weights`` turns what a user passes as ``weights=`` (a path, a zoo name or a URL) into a local file,
downloading into ``cache_dir()`` once and checking the hash. Only the standard library and tqdm are used here
so that importing this module stays cheap (the CLI lists models without loading torch).

Sources (see each entry's comment):
  mmdet   open-mmlab/mmdetection configs/rtmdet/metafile.yml and README.md (3.x)
  mmrot   open-mmlab/mmrotate configs/rotated_rtmdet/README.md (1.x); its metafile says ``Weights: todo``
  mmpose  open-mmlab/mmpose projects/rtmpose/README.md
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
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

__all__ = [
    "ZOO",
    "DownloadError",
    "UnsupportedModelError",
    "ZooEntry",
    "cache_dir",
    "download",
    "list_models",
    "resolve_weights",
]

TASKS = ("detect", "segment", "rotated", "classify")

# OpenMMLab/torch.hub file names end in "-<sha256 prefix>.pth"; 8 hex digits in every published RTMDet file.
_HASH_IN_FILE_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
_URL_SCHEMES = ("http://", "https://", "file://")
_CHUNK = 1 << 20
_USER_AGENT = f"rtmkit-zoo (Python-urllib/{sys.version_info.major}.{sys.version_info.minor})"


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint."""

    name: str  # zoo key, e.g. "rtmdet-tiny"
    config: str  # rtmkit config name the weights are for (same as ``name`` for detectors)
    url: str
    sha256_prefix: str | None  # hex digits from the file name, None when the name carries none
    task: str  # "detect" | "segment" | "rotated" | "classify"
    supported: bool  # False: reserved name, rtmkit cannot build this model family yet
    metrics: dict[str, float]
    notes: str = ""

    @property
    def file_name(self) -> str:
        """The file name the checkpoint has upstream (and in the cache)."""
        return _file_name_from_url(self.url)


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, truncated body or hash mismatch)."""


class UnsupportedModelError(NotImplementedError):
    """The zoo name is reserved for a model family rtmkit cannot build yet."""


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------

_MMDET = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/"
_CSPNEXT = _MMDET + "cspnext_rsb_pretrain/"
_MMROT = "https://download.openmmlab.com/mmrotate/v1.0/rotated_rtmdet/"
_MMPOSE = "https://download.openmmlab.com/mmpose/v1/projects/"
# The larger-model RTMDet files are GitHub release assets of orange0-jp (an OpenMMLab contributor); the
# official mmdetection metafile and README link to exactly these URLs.
_ORANGE = "https://github.com/orange0-jp/orange-weights/releases/download/"


def _entry(name: str, url: str, sha256_prefix: str | None, task: str, metrics: dict[str, float], *,
           config: str | None = None, supported: bool = True, notes: str = "") -> ZooEntry:
    return ZooEntry(name=name, config=config or name, url=url, sha256_prefix=sha256_prefix, task=task,
                    supported=supported, metrics=metrics, notes=notes)


def _mmdet(config_stem: str, stamp: str) -> str:
    """mmdetection layout: <base>/<config>/<config>_<date>_<time>-<hash>.pth."""
    return f"{_MMDET}{config_stem}/{config_stem}_{stamp}.pth"


def _mmrot(config_stem: str, sha: str) -> str:
    """mmrotate layout: <base>/<config>/<config>-<hash>.pth."""
    return f"{_MMROT}{config_stem}/{config_stem}-{sha}.pth"


_COCO_AP_NOTE = ("box_ap from mmdet metafile.yml; box_ap_readme from the README table, measured after the "
                 "test_cfg change of mmdetection PR #9494 (+0.1-0.3 AP)")
_RESERVED_INS = "RTMDet-Ins (instance segmentation): reserved, rtmkit does not build the mask head yet"
_RESERVED_ROT = "RTMDet-R (rotated boxes, DOTA-v1.0, 15 classes): reserved, rtmkit does not build it yet"
_DOTA_METRICS_NOTE = "DOTA-v1.0 test server mmAP/mAP50/mAP75 from the mmrotate README"

_ENTRIES: list[ZooEntry] = [
    # ---- COCO detection (mmdet metafile.yml + README) ----
    _entry("rtmdet-tiny", _mmdet("rtmdet_tiny_8xb32-300e_coco", "20220902_112414-78e30dcc"), "78e30dcc",
           "detect", {"box_ap": 40.9, "box_ap_readme": 41.1}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-s", _mmdet("rtmdet_s_8xb32-300e_coco", "20220905_161602-387a891e"), "387a891e",
           "detect", {"box_ap": 44.5, "box_ap_readme": 44.6}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-m", _mmdet("rtmdet_m_8xb32-300e_coco", "20220719_112220-229f527c"), "229f527c",
           "detect", {"box_ap": 49.1, "box_ap_readme": 49.4}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-l", _mmdet("rtmdet_l_8xb32-300e_coco", "20220719_112030-5a0be7c4"), "5a0be7c4",
           "detect", {"box_ap": 51.3, "box_ap_readme": 51.5}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-x", _mmdet("rtmdet_x_8xb32-300e_coco", "20220715_230555-cc79b9ae"), "cc79b9ae",
           "detect", {"box_ap": 52.6, "box_ap_readme": 52.8}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-x-p6", _ORANGE + "v0.1.0rtmdet-p6/rtmdet_x_p6_4xb8-300e_coco-bf32be58.pth", "bf32be58",
           "detect", {"box_ap": 54.9}, notes="P6 (strides 8-64), 1280 input; GitHub release linked by mmdet"),
    # RTMDet-l with other backbones (mmdet metafile): reserved, rtmkit has only CSPNeXt backbones.
    _entry("rtmdet-l-convnext-b",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_convnext_b_4xb32-100e_coco-d4731b3d.pth",
           "d4731b3d", "detect", {"box_ap": 53.1}, supported=False,
           notes="ConvNeXt-B backbone: reserved, rtmkit does not build this backbone"),
    _entry("rtmdet-l-swin-b",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_swin_b_4xb32-100e_coco-0828ce5d.pth", "0828ce5d",
           "detect", {"box_ap": 52.4}, supported=False,
           notes="Swin-B backbone: reserved, rtmkit does not build this backbone"),
    _entry("rtmdet-l-swin-b-p6",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_swin_b_p6_4xb16-100e_coco-a1486b6f.pth", "a1486b6f",
           "detect", {"box_ap": 56.4}, supported=False,
           notes="Swin-B backbone, P6, 1280 input: reserved, rtmkit does not build this backbone"),
    # ---- Single-class detectors published with RTMPose (mmpose projects/rtmpose/README.md) ----
    _entry("rtmdet-nano-person", _MMPOSE + "rtmpose/rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
           "05d8511e", "detect", {"box_ap": 40.3},
           notes="person only, 320 input, trained on COCO+Objects365; box_ap = COCO person AP from the "
                 "RTMPose README. The RTMPose CPU SDK (rtmpose-cpu.zip) exports an earlier file, "
                 "rtmdet_nano_8xb32-300e_coco-person_in1kpretrain-96154d0b.pth, with no standalone URL"),
    _entry("rtmdet-m-person", _MMPOSE + "rtmpose/rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
           "235e8209", "detect", {"box_ap": 62.5},
           notes="RTMDet-m with num_classes=1 (person), 640 input, COCO+Objects365; box_ap = COCO person AP "
                 "from the RTMPose README"),
    _entry("rtmdet-nano-hand", _MMPOSE + "rtmposev1/rtmdet_nano_8xb32-300e_hand-267f9c8f.pth",
           "267f9c8f", "detect", {"box_ap": 76.0},
           notes="hand only, same network as rtmdet-nano-person, 320 input ('alpha version' upstream); "
                 "box_ap on OneHand10K from the RTMPose README"),
    # ---- COCO instance segmentation (mmdet metafile.yml): reserved ----
    _entry("rtmdet-ins-tiny", _mmdet("rtmdet-ins_tiny_8xb32-300e_coco", "20221130_151727-ec670f7e"),
           "ec670f7e", "segment", {"box_ap": 40.5, "mask_ap": 35.4}, supported=False, notes=_RESERVED_INS),
    _entry("rtmdet-ins-s", _mmdet("rtmdet-ins_s_8xb32-300e_coco", "20221121_212604-fdc5d7ec"),
           "fdc5d7ec", "segment", {"box_ap": 44.0, "mask_ap": 38.7}, supported=False, notes=_RESERVED_INS),
    _entry("rtmdet-ins-m", _mmdet("rtmdet-ins_m_8xb32-300e_coco", "20221123_001039-6eba602e"),
           "6eba602e", "segment", {"box_ap": 48.8, "mask_ap": 42.1}, supported=False, notes=_RESERVED_INS),
    _entry("rtmdet-ins-l", _mmdet("rtmdet-ins_l_8xb32-300e_coco", "20221124_103237-78d1d652"),
           "78d1d652", "segment", {"box_ap": 51.2, "mask_ap": 43.7}, supported=False, notes=_RESERVED_INS),
    _entry("rtmdet-ins-x", _mmdet("rtmdet-ins_x_8xb16-300e_coco", "20221124_111313-33d4595b"),
           "33d4595b", "segment", {"box_ap": 52.4, "mask_ap": 44.6}, supported=False, notes=_RESERVED_INS),
    # ---- Rotated detection, DOTA-v1.0 / HRSC (mmrotate 1.x README): reserved ----
    # Single-scale training, ImageNet-pretrained backbone. The mmrotate metafile lists mAP 75.60 for tiny
    # (README: 75.36) and "Weights: todo" for all; the README URLs are used.
    _entry("rtmdet-r-tiny", _mmrot("rotated_rtmdet_tiny-3x-dota", "9d821076"), "9d821076", "rotated",
           {"dota_mmap": 47.37, "dota_map50": 75.36, "dota_map75": 50.64}, supported=False,
           notes=_RESERVED_ROT),
    _entry("rtmdet-r-s", _mmrot("rotated_rtmdet_s-3x-dota", "11f6ccf5"), "11f6ccf5", "rotated",
           {"dota_mmap": 48.16, "dota_map50": 76.93, "dota_map75": 50.59}, supported=False,
           notes=_RESERVED_ROT),
    _entry("rtmdet-r-m", _mmrot("rotated_rtmdet_m-3x-dota", "beeadda6"), "beeadda6", "rotated",
           {"dota_mmap": 50.56, "dota_map50": 78.24, "dota_map75": 54.47}, supported=False,
           notes=_RESERVED_ROT),
    _entry("rtmdet-r-l", _mmrot("rotated_rtmdet_l-3x-dota", "23992372"), "23992372", "rotated",
           {"dota_mmap": 51.01, "dota_map50": 78.85, "dota_map75": 55.21}, supported=False,
           notes=_RESERVED_ROT),
    # Multi-scale + random-rotate training: same networks as above, so `config` names the size.
    _entry("rtmdet-r-tiny-ms", _mmrot("rotated_rtmdet_tiny-3x-dota_ms", "f12286ff"), "f12286ff", "rotated",
           {"dota_mmap": 53.59, "dota_map50": 79.82, "dota_map75": 58.87}, config="rtmdet-r-tiny",
           supported=False, notes=_RESERVED_ROT + "; multi-scale training"),
    _entry("rtmdet-r-s-ms", _mmrot("rotated_rtmdet_s-3x-dota_ms", "20ead048"), "20ead048", "rotated",
           {"dota_mmap": 54.43, "dota_map50": 79.98, "dota_map75": 60.07}, config="rtmdet-r-s",
           supported=False, notes=_RESERVED_ROT + "; multi-scale training"),
    _entry("rtmdet-r-m-ms", _mmrot("rotated_rtmdet_m-3x-dota_ms", "c71eb375"), "c71eb375", "rotated",
           {"dota_mmap": 55.00, "dota_map50": 80.26, "dota_map75": 61.26}, config="rtmdet-r-m",
           supported=False, notes=_RESERVED_ROT + "; multi-scale training"),
    _entry("rtmdet-r-l-ms", _mmrot("rotated_rtmdet_l-3x-dota_ms", "2738da34"), "2738da34", "rotated",
           {"dota_mmap": 55.52, "dota_map50": 80.54, "dota_map75": 61.47}, config="rtmdet-r-l",
           supported=False, notes=_RESERVED_ROT + "; multi-scale training"),
    _entry("rtmdet-r-l-coco-ms", _mmrot("rotated_rtmdet_l-coco_pretrain-3x-dota_ms", "06d248a2"), "06d248a2",
           "rotated", {"dota_mmap": 56.74, "dota_map50": 81.33, "dota_map75": 63.45}, config="rtmdet-r-l",
           supported=False, notes=_RESERVED_ROT + "; COCO-pretrained, multi-scale training"),
    _entry("rtmdet-r-l-aug", _mmrot("rotated_rtmdet_l-100e-aug-dota", "bc59fd88"), "bc59fd88", "rotated",
           {"dota_mmap": 54.59, "dota_map50": 80.16, "dota_map75": 61.16}, config="rtmdet-r-l",
           supported=False, notes=_RESERVED_ROT + "; 100 epochs with Mixup+Mosaic"),
    _entry("rtmdet-r-tiny-hrsc", _mmrot("rotated_rtmdet_tiny-9x-hrsc", "9f2e3ca6"), "9f2e3ca6", "rotated",
           {"hrsc_map07": 90.6, "hrsc_map12": 97.1}, supported=False,
           notes="RTMDet-R tiny on HRSC2016 (1 class, 800 input): reserved, rtmkit does not build it yet"),
    # ---- CSPNeXt ImageNet backbones (mmdet configs/rtmdet/classification/README.md) ----
    # Keys are prefixed "backbone."; used to initialise training. The mmdet tiny/s detector configs point to
    # hash-less copies (cspnext-tiny_imagenet_600e.pth, cspnext-s_imagenet_600e.pth) in the same folder.
    _entry("cspnext-tiny", _CSPNEXT + "cspnext-tiny_imagenet_600e-3a2dd350.pth", "3a2dd350", "classify",
           {"top1": 69.44, "top5": 89.45}, notes="ImageNet-1k, 224 input"),
    _entry("cspnext-s", _CSPNEXT + "cspnext-s_imagenet_600e-ea671761.pth", "ea671761", "classify",
           {"top1": 74.41, "top5": 92.23}, notes="ImageNet-1k, 224 input"),
    _entry("cspnext-m", _CSPNEXT + "cspnext-m_8xb256-rsb-a1-600e_in1k-ecb3bbd9.pth", "ecb3bbd9", "classify",
           {"top1": 79.27, "top5": 94.79}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
    _entry("cspnext-l", _CSPNEXT + "cspnext-l_8xb256-rsb-a1-600e_in1k-6a760974.pth", "6a760974", "classify",
           {"top1": 81.30, "top5": 95.62}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
    _entry("cspnext-x", _CSPNEXT + "cspnext-x_8xb256-rsb-a1-600e_in1k-b3f78edd.pth", "b3f78edd", "classify",
           {"top1": 82.10, "top5": 95.69}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
]

ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}
if len(ZOO) != len(_ENTRIES):  # a duplicate name would silently shadow an entry
    raise RuntimeError("duplicate names in the rtmkit model zoo table")


def list_models(task: str | None = None) -> list[str]:
    """Zoo names, in table order, optionally only those of one task ("detect", "segment", ...)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return [name for name, entry in ZOO.items() if task is None or entry.task == task]


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
    close = difflib.get_close_matches(spec.lower(), list(ZOO), n=3, cutoff=0.6)
    if close:
        hint = f"\nDid you mean: {', '.join(close)}?"
    return (f"weights={spec!r} is not an existing file, a zoo name or a URL. Accepted forms:\n"
            '  - a local checkpoint file: weights="path/to/checkpoint.pth"\n'
            '  - a zoo name: weights="rtmdet-s" (all names: rtmkit.zoo.list_models())\n'
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


def _zoo_lookup(spec: str) -> ZooEntry | None:
    if spec in ZOO:
        return ZOO[spec]
    # Be lenient about case and underscores ("RTMDet_s"), never about anything else.
    return ZOO.get(spec.strip().lower().replace("_", "-"))


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

    entry = _zoo_lookup(spec)
    if entry is None:
        raise FileNotFoundError(_accepted_forms(spec))
    if not entry.supported:
        raise UnsupportedModelError(
            f"{entry.name!r} is a reserved zoo name: its model family ({entry.task}) is not yet supported by "
            f"rtmkit, so its weights are not fetched. {entry.notes}. Upstream file: {entry.url}")
    return _cached_download(entry.url, entry.sha256_prefix, progress)

