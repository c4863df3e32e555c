"""Safe loading and saving of RTMDet checkpoints (``.pth`` torch zip files).

Loading never executes code from the file: every load goes through ``torch.load(weights_only=True)``.
Official MMDetection files saved by MMEngine's training runner also pickle objects of ``mmengine``
classes, numpy scalars/arrays and ``getattr`` (for bound methods), which the weights-only unpickler
refuses. For those files we list the globals the pickle names (torch's ``get_unsafe_globals_in_checkpoint``,
or our own opcode scan for files it cannot read), refuse the file outright if any of them lies outside a
small set of known-harmless families, and otherwise load again with *inert stand-ins* registered under
exactly those names (our own code, never the real classes or functions): mm* classes become stub objects
that only record their arguments and state, numpy values are decoded from their raw bytes with
``numpy.frombuffer``, and ``getattr`` returns a placeholder. mmengine is never imported.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import pickletools
import threading
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "AttributeRef",
    "CheckpointError",
    "InertStub",
    "checkpoint_class_names",
    "checkpoint_config",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_weights",
    "save_checkpoint",
    "tensors_sha256",
]

# Packages whose pickled class instances are replaced by inert stubs (OpenMMLab training-state objects).
_STUB_PACKAGES = ("mmengine", "mmdet", "mmcv", "mmyolo", "mmrotate", "mmpose")
# numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; files from either era exist.
_NUMPY_SCALAR = {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}
_NUMPY_RECONSTRUCT = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}
_NUMPY_FROMBUFFER = {"numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer"}
_NUMPY_DTYPE = "numpy.dtype"
_NUMPY_NDARRAY = "numpy.ndarray"
_GETATTR = "builtins.getattr"  # ``__builtin__.getattr`` in protocol-2 files, mapped like torch does
_CODECS_ENCODE = "_codecs.encode"

# How many entries of a long key list an error message shows.
_LIST_LIMIT = 10

# torch's allowlist is process-global state; serialise our temporary registrations so that two loads in
# different threads cannot remove each other's stand-ins mid-load (nor hide them from each other's scan).
_SAFE_GLOBALS_LOCK = threading.Lock()


class CheckpointError(RuntimeError):
    """A checkpoint file could not be loaded, was refused, or does not fit the model."""


# ----------------------------------------------------------------------------------------------------------
# Inert stand-ins
# ----------------------------------------------------------------------------------------------------------


class InertStub:
    """Stand-in for an instance of an OpenMMLab class found in a checkpoint.

    It runs none of the real class's code: constructor arguments go to ``args`` and pickled state to
    ``state``. A subclass is generated per class name and per load; ``stub_name`` is the dotted name the
    file used (e.g. ``"mmengine.logging.history_buffer.HistoryBuffer"``).
    """

    stub_name: str = "<unknown>"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStub:
        # The weights-only unpickler builds NEWOBJ instances with ``cls.__new__(cls, *args)``.
        obj = super().__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments were recorded in __new__; nothing else may happen here.
        pass

    def __setstate__(self, state: Any) -> None:
        # Kept apart from __dict__ so pickled state can never shadow our own attributes.
        self.state = state

    def __repr__(self) -> str:
        return f"<InertStub {self.stub_name}>"


class AttributeRef:
    """What ``getattr(obj, name)`` in a checkpoint becomes: a record of (obj, name), never a real lookup."""

    def __init__(self, obj: Any, name: Any) -> None:
        self.obj = obj
        self.name = name

    def __repr__(self) -> str:
        return f"<AttributeRef {self.obj!r}.{self.name}>"


def _make_stub_class(module: str, qualname: str) -> type[InertStub]:
    full_name = f"{module}.{qualname}"
    return type(
        qualname.rsplit(".", 1)[-1],
        (InertStub,),
        {"__module__": module, "__qualname__": qualname, "stub_name": full_name},
    )


def _inert_getattr(obj: Any, name: Any, *default: Any) -> AttributeRef:
    return AttributeRef(obj, name)


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles store bytes as ``_codecs.encode(str, "latin1")``; nothing else is honoured.
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise ValueError(f"unsupported _codecs.encode call with encoding {encoding!r}")
    return text.encode("latin1")


class _NumpyDtypeStandIn:
    """Records ``numpy.dtype(spec, align, copy)`` plus its pickled state; ``to_numpy`` builds the dtype."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = True, *rest: Any) -> None:
        self.spec = spec
        self.align = bool(align)
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.dtype:
        if not isinstance(self.spec, str):
            raise ValueError(f"unsupported numpy dtype spec {self.spec!r}")
        state = self.state if isinstance(self.state, tuple) else ()
        byteorder = state[1] if len(state) > 1 and isinstance(state[1], str) else "="
        subarray = state[2] if len(state) > 2 else None
        names = state[3] if len(state) > 3 else None
        fields = state[4] if len(state) > 4 else None
        if names and isinstance(fields, Mapping):
            # Structured dtype: rebuild from the per-field (dtype, offset[, title]) records.
            return np.dtype(
                {
                    "names": list(names),
                    "formats": [_to_numpy_dtype(fields[n][0]) for n in names],
                    "offsets": [int(fields[n][1]) for n in names],
                    "itemsize": int(state[5]),
                },
                align=self.align,
            )
        if isinstance(subarray, tuple) and len(subarray) == 2:
            return np.dtype((_to_numpy_dtype(subarray[0]), tuple(int(s) for s in subarray[1])))
        spec = self.spec
        if spec[:2] in ("M8", "m8") and len(state) > 8:
            spec += _datetime_unit_suffix(state[8])
        dtype = np.dtype(spec, align=self.align)
        if byteorder in ("<", ">") and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(byteorder)
        return dtype


def _datetime_unit_suffix(meta: Any) -> str:
    # numpy >= 1.x pickles (metadata_dict, (unit, num, den, events)); older files just the unit tuple.
    if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple):
        meta = meta[1]
    if not (isinstance(meta, tuple) and meta and isinstance(meta[0], (bytes, str))):
        return ""
    unit = meta[0].decode("ascii") if isinstance(meta[0], bytes) else meta[0]
    count = int(meta[1]) if len(meta) > 1 else 1
    if unit == "generic":
        return ""
    return f"[{unit}]" if count == 1 else f"[{count}{unit}]"


def _to_numpy_dtype(value: Any) -> np.dtype:
    if isinstance(value, _NumpyDtypeStandIn):
        return value.to_numpy()
    if isinstance(value, str):
        return np.dtype(value)
    raise ValueError(f"expected a numpy dtype, got {type(value).__name__}")


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):  # Python 2 era pickles
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise ValueError(f"expected raw bytes for a numpy value, got {type(data).__name__}")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar``: decode to a plain Python value."""
    np_dtype = _to_numpy_dtype(dtype)
    if np_dtype.hasobject:
        return data  # object scalars pickle the object itself
    raw = _as_bytes(data)
    if len(raw) != np_dtype.itemsize:
        raise ValueError(f"numpy scalar of dtype {np_dtype} needs {np_dtype.itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=np_dtype, count=1)[0].item()


class _NdarrayPlaceholder:
    """Result of ``numpy.core.multiarray._reconstruct``; the pickle then BUILDs it with the array state.

    Registered under the name ``numpy.ndarray`` so the unpickler lets BUILD reach ``__setstate__``;
    ``to_numpy`` decodes the bytes afterwards.
    """

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = self.state
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("numpy array without a valid pickled state")
        if len(state) == 5:
            state = state[1:]  # drop the format version
        shape, dtype, is_fortran, raw = state
        shape = tuple(int(s) for s in shape)
        np_dtype = _to_numpy_dtype(dtype)
        count = math.prod(shape)
        order = "F" if is_fortran else "C"
        if np_dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != count:
                raise ValueError("object numpy array with malformed item list")
            flat = np.empty(count, dtype=object)
            for i, item in enumerate(raw):
                flat[i] = item
            return flat.reshape(shape, order=order)
        data = _as_bytes(raw)
        if len(data) != count * np_dtype.itemsize:
            raise ValueError(
                f"numpy array of shape {shape} and dtype {np_dtype}: wrong byte count {len(data)}"
            )
        # copy(): own, writable memory instead of a view on the pickle's bytes.
        return np.frombuffer(data, dtype=np_dtype, count=count).reshape(shape, order=order).copy()


def _numpy_reconstruct(subtype: Any = None, shape: Any = None, dtype_code: Any = None) -> _NdarrayPlaceholder:
    return _NdarrayPlaceholder()


def _numpy_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    """Stand-in for ``numpy.core.numeric._frombuffer`` (arrays pickled with protocol 5)."""
    np_dtype = _to_numpy_dtype(dtype)
    if np_dtype.hasobject:
        raise ValueError("object arrays cannot come from a raw buffer")
    shape = tuple(int(s) for s in shape)
    data = _as_bytes(buf)
    count = math.prod(shape)
    if len(data) != count * np_dtype.itemsize:
        raise ValueError("numpy buffer has the wrong size")
    return np.frombuffer(data, dtype=np_dtype, count=count).reshape(shape, order=str(order)).copy()


def _finalize(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace numpy placeholders anywhere in the loaded object by real numpy arrays / dtypes."""
    if memo is None:
        memo = {}
    if isinstance(obj, (torch.Tensor, str, bytes, int, float, complex, type(None))):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _NdarrayPlaceholder):
        memo[key] = result = obj.to_numpy()
        if result.dtype.hasobject:
            for i, item in enumerate(result.flat):
                result.flat[i] = _finalize(item, memo)
        return result
    if isinstance(obj, _NumpyDtypeStandIn):
        memo[key] = result = obj.to_numpy()
        return result
    memo[key] = obj  # containers are fixed in place; registering first makes cycles terminate
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            obj[k] = _finalize(v, memo)
    elif isinstance(obj, list):
        obj[:] = [_finalize(v, memo) for v in obj]
    elif type(obj) is tuple:  # immutable: rebuilt (tuple subclasses such as torch.Size hold no numpy)
        memo[key] = result = tuple(_finalize(v, memo) for v in obj)
        return result
    elif isinstance(obj, set):
        items = [_finalize(v, memo) for v in obj]
        obj.clear()
        obj.update(items)
    elif isinstance(obj, InertStub):
        obj.args = _finalize(obj.args, memo)
        obj.kwargs = _finalize(obj.kwargs, memo)
        obj.state = _finalize(obj.state, memo)
    elif isinstance(obj, AttributeRef):
        obj.obj = _finalize(obj.obj, memo)
    return obj


# ----------------------------------------------------------------------------------------------------------
# Finding the globals a pickle names
# ----------------------------------------------------------------------------------------------------------


def _map_global(module: str, name: str) -> tuple[str, str]:
    """Python-2 name fix-ups, exactly as torch's weights-only unpickler applies them."""
    try:
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:  # pragma: no cover - very old/new torch
        IMPORT_MAPPING, NAME_MAPPING = {"__builtin__": "builtins"}, {}
    if (module, name) in NAME_MAPPING:
        return NAME_MAPPING[(module, name)]
    return IMPORT_MAPPING.get(module, module), name


def _globals_in_pickle(stream: io.BufferedIOBase) -> list[tuple[str, str, str]]:
    """(module, name, as written) of every global one pickle references, by walking its opcodes.

    Nothing is executed. STACK_GLOBAL (protocol 4+) takes its names from the stack; we report the two
    strings pushed last, which is how pickle writes them (torch refuses that opcode anyway).
    """
    found: list[tuple[str, str, str]] = []
    recent_strings: list[str] = []
    for opcode, arg, _pos in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            found.append((*_map_global(module, name), f"{module}.{name}"))
        elif opcode.name == "STACK_GLOBAL":
            if len(recent_strings) >= 2:
                module, name = recent_strings[-2], recent_strings[-1]
                found.append((*_map_global(module, name), f"{module}.{name}"))
            else:
                found.append(("<STACK_GLOBAL>", "<unknown>", "<STACK_GLOBAL>"))
        elif isinstance(arg, str) and "UNICODE" in opcode.name:
            recent_strings = [*recent_strings[-1:], arg]
    return found


def _scan_checkpoint_globals(path: pathlib.Path) -> list[tuple[str, str, str]]:
    """Globals referenced by the pickle(s) torch would unpickle from ``path``; ValueError if unreadable."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            # torch zip files hold ``<archive name>/data.pkl``; other records are raw tensor bytes.
            pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if not pickles:
                raise ValueError("zip file without a data.pkl record")
            found: list[tuple[str, str, str]] = []
            for name in pickles:
                found += _globals_in_pickle(io.BytesIO(archive.read(name)))
            return found
    # Legacy (pre-1.6) format: magic number, protocol, sys info and the object are successive pickles.
    found = []
    with open(path, "rb") as stream:
        if stream.read(4) == b"PK\x03\x04":
            raise ValueError("damaged or truncated zip archive")
        stream.seek(0)
        for _ in range(4):
            found += _globals_in_pickle(stream)
            if not stream.peek(1):  # a single plain pickle ends here
                break
    return found


def _unsafe_globals(path: pathlib.Path) -> list[tuple[str, str, str]]:
    """(module, name, as written) of each global in the checkpoint that torch does not allow by default."""
    get_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    if get_unsafe is not None:
        try:
            names = get_unsafe(path)
        except Exception:
            # torch's scan reads only torch zip files whose pickle sticks to the opcodes torch.save writes by
            # default (protocol 2); legacy and plain-pickle files and protocol-4+ pickles (STACK_GLOBAL, e.g.
            # payloads saved with pickle_protocol=4) still need our own scan to be named and refused.
            pass
        else:
            # torch reports "module.name" joined (after its Python-2 renames), so the split is a guess: a nested
            # class's outer name lands in the module, which only changes the stub's __module__/__qualname__.
            split = (full.rpartition(".") for full in sorted(names))
            return [(module, name, f"{module}.{name}") for module, _, name in split]
    return [
        (module, name, written)
        for module, name, written in _scan_checkpoint_globals(path)
        if not _torch_default_allowed(f"{module}.{name}")
    ]


def _torch_default_allowed(full_name: str) -> bool:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return full_name in _get_allowed_globals()
    except Exception:  # pragma: no cover - private API moved; classification only affects messages
        return full_name.startswith("torch.") or full_name in (
            "collections.OrderedDict",
            "collections.Counter",
            "_codecs.encode",
            "builtins.set",
            "builtins.bytearray",
            "builtins.complex",
        )


def _is_stub_family(module: str) -> bool:
    return any(module == pkg or module.startswith(pkg + ".") for pkg in _STUB_PACKAGES)


def _stand_in_for(module: str, name: str) -> Any | None:
    """The inert object registered for an allowed global, or None when the global is not allowed."""
    full_name = f"{module}.{name}"
    if _is_stub_family(module) and name and all(part.isidentifier() for part in name.split(".")):
        return _make_stub_class(module, name)
    if full_name in _NUMPY_SCALAR:
        return _numpy_scalar
    if full_name in _NUMPY_RECONSTRUCT:
        return _numpy_reconstruct
    if full_name in _NUMPY_FROMBUFFER:
        return _numpy_frombuffer
    if full_name == _NUMPY_DTYPE:
        return _NumpyDtypeStandIn
    if full_name == _NUMPY_NDARRAY:
        return _NdarrayPlaceholder
    if full_name == _GETATTR:
        return _inert_getattr
    if full_name == _CODECS_ENCODE:
        return _latin1_encode
    return None


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def load_checkpoint_file(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """Safely load a ``.pth`` file and return its top-level dict.

    Always ``torch.load(weights_only=True)``; files with OpenMMLab / numpy objects are retried with inert
    stand-ins (see the module docstring). Raises CheckpointError naming the file when it is missing, not a
    torch checkpoint, corrupt or truncated, references a disallowed global (possibly malicious), or does
    not hold a dict. numpy scalars anywhere in the result become plain Python numbers.

    ``verify`` (default): the zip members' CRC-32s are checked (torch itself does not: flipped bytes inside a
    tensor would load silently), and an rtmkit checkpoint's tensors must match the SHA-256 recorded when it was
    written. ``verify=False`` skips both (faster for very large files you trust).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if verify:
        _verify_zip(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first_error:
        obj = _load_with_stand_ins(path, first_error)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict at the top level of the checkpoint, got {type(obj).__name__}"
        )
    if verify:
        recorded = obj.get("rtmkit", {}).get("sha256") if isinstance(obj.get("rtmkit"), dict) else None
        if recorded is not None:
            actual = tensors_sha256(obj)
            if actual != recorded:
                raise CheckpointError(
                    f"{path}: its tensors do not match the SHA-256 recorded when rtmkit wrote it (recorded "
                    f"{recorded[:16]}..., now {actual[:16]}...): the file was modified or corrupted. Use a good "
                    "copy (or load with verify=False if you changed it on purpose).")
    return obj


def _verify_zip(path: pathlib.Path) -> None:
    """CRC-32 of every member of a torch zip checkpoint (legacy non-zip files have no checksums)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_short(e)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint: member {bad!r} fails its CRC-32 check (bytes changed "
                              "after it was written); use a good copy")


def _walk_tensors(obj: Any, prefix: str = "") -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            yield from _walk_tensors(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk_tensors(value, f"{prefix}/{i}")


def tensors_sha256(ckpt: Mapping) -> str:
    """SHA-256 over every tensor of a checkpoint (name, dtype, shape and bytes, in sorted key order), except the
    ``rtmkit`` entry that records it."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in _walk_tensors({k: v for k, v in ckpt.items() if k != "rtmkit"}):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _load_with_stand_ins(path: pathlib.Path, first_error: Exception) -> Any:
    # torch's scan also skips globals registered as safe right now, so it must not run while another thread's
    # stand-ins are registered: the lock covers the scan as well as the load.
    with _SAFE_GLOBALS_LOCK:
        return _scan_and_load(path, first_error)


def _scan_and_load(path: pathlib.Path, first_error: Exception) -> Any:
    try:
        found = _unsafe_globals(path)
    except Exception as scan_error:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another file type): "
            f"{_short(first_error)} [{_short(scan_error)}]"
        ) from first_error

    needed: dict[str, Any] = {}
    refused: list[str] = []
    for module, name, written in found:
        full_name = f"{module}.{name}"
        if full_name in needed:
            continue
        stand_in = _stand_in_for(module, name)
        if stand_in is None:
            label = full_name if written == full_name else f"{full_name} (written as {written})"
            if label not in refused:
                refused.append(label)
        else:
            needed[full_name] = stand_in
    if refused:
        raise CheckpointError(
            f"{path}: refusing to load: the checkpoint references global(s) that are not allowed: "
            f"{', '.join(refused)}. Unpickling them could run arbitrary code; the file may be malicious."
        )
    if not needed:
        # Nothing unusual referenced, so the first failure was about the file itself.
        raise CheckpointError(
            f"{path}: could not load the checkpoint: {_short(first_error)}"
        ) from first_error
    if _NUMPY_RECONSTRUCT & needed.keys():
        # BUILD on the array placeholder is only allowed when its type is registered.
        needed.setdefault(_NUMPY_NDARRAY, _NdarrayPlaceholder)

    allowlist = [(stand_in, full_name) for full_name, stand_in in needed.items()]
    try:
        with torch.serialization.safe_globals(allowlist):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        return _finalize(obj)
    except Exception as error:
        raise CheckpointError(
            f"{path}: could not load the checkpoint even with inert stand-ins for "
            f"{', '.join(sorted(needed))}: {_short(error)}"
        ) from error


def _short(error: BaseException, limit: int = 400) -> str:
    """One-line cause of a load failure, without torch's advice to retry with ``weights_only=False``."""
    text = str(error)
    if text.startswith("Weights only load failed"):
        # torch wraps the unpickler's own error in a long message; the original is the useful part.
        inner = error.__cause__ or error.__context__
        if inner is not None:
            error, text = inner, str(inner)
        else:
            parts = text.split("\n\n")
            text = parts[1].strip() if len(parts) > 2 else "weights-only unpickling failed"
    text = f"{type(error).__name__}: {text}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------------------------------------
# Reading the contents
# ----------------------------------------------------------------------------------------------------------


def _all_tensors(mapping: Mapping) -> bool:
    return len(mapping) > 0 and all(isinstance(v, torch.Tensor) for v in mapping.values())


def extract_state_dict(ckpt: dict, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint.

    ``ckpt["state_dict"]`` for MMDetection/MMEngine and rtmkit files (MMEngine's runner already stores the
    EMA weights there; ``ema_state_dict`` holds the raw ones and is never used), a bare dict of tensors, or
    ``ckpt["model"]``. A ``module.`` prefix shared by all keys is stripped and ``data_preprocessor.*``
    entries are dropped.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a checkpoint dict, got {type(ckpt).__name__}")
    if isinstance(ckpt.get("state_dict"), Mapping):
        weights, where = ckpt["state_dict"], '"state_dict"'
    elif _all_tensors(ckpt):
        weights, where = ckpt, "the top level"
    elif isinstance(ckpt.get("model"), Mapping):
        weights, where = ckpt["model"], '"model"'
    else:
        keys = ", ".join(repr(k) for k in list(ckpt)[:_LIST_LIMIT])
        raise CheckpointError(
            f'{source}: no state dict found (looked for "state_dict", a dict of tensors, "model"); '
            f"top-level keys: {keys or '(none)'}"
        )
    bad = [str(k) for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: the state dict in {where} has non-tensor entries: {_listing(bad)}")
    if not weights:
        raise CheckpointError(f"{source}: the state dict in {where} is empty")

    prefix = "module."
    if all(k.startswith(prefix) for k in weights):  # saved from DataParallel / DistributedDataParallel
        weights = {k[len(prefix) :]: v for k, v in weights.items()}
    return {k: v for k, v in weights.items() if not k.startswith("data_preprocessor.")}


def checkpoint_class_names(ckpt: dict) -> list[str] | None:
    """``ckpt["meta"]["dataset_meta"]["classes"]`` as a list of str, or None when absent."""
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, Mapping) else None
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
    if isinstance(classes, str):
        return [classes]
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def checkpoint_config(ckpt: dict) -> dict | None:
    """``ckpt["rtmkit"]["config"]`` when present, else None."""
    section = ckpt.get("rtmkit") if isinstance(ckpt, Mapping) else None
    config = section.get("config") if isinstance(section, Mapping) else None
    return config if isinstance(config, dict) else None


def _listing(keys: Iterable[str], limit: int = _LIST_LIMIT) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(
    module: torch.nn.Module, state_dict: dict, strict: bool = True, source: str = "<checkpoint>"
) -> tuple[list[str], list[str]]:
    """Load ``state_dict`` into ``module`` after checking names and shapes.

    Any shape mismatch raises CheckpointError. With ``strict`` any missing or unexpected key raises too;
    otherwise the matching entries are loaded and ``(missing, unexpected)`` is returned.
    """
    model_state = module.state_dict()
    not_tensors = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: non-tensor values in the state dict: {_listing(not_tensors)}")

    mismatched = [
        f"{key} (checkpoint {tuple(value.shape)}, model {tuple(model_state[key].shape)})"
        for key, value in state_dict.items()
        if key in model_state and value.shape != model_state[key].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{source}: {len(mismatched)} weight(s) have a different shape than the model: "
            f"{_listing(mismatched)}"
        )
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing from the checkpoint: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected in the checkpoint: {_listing(unexpected)}")
        raise CheckpointError(f"{source}: the checkpoint does not match the model; " + "; ".join(parts))

    matching = {k: v for k, v in state_dict.items() if k in model_state}
    # Names and shapes are already checked; strict=False just skips the keys we reported.
    module.load_state_dict(matching, strict=False)
    return missing, unexpected


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------

_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes)
_TORCH_LEAVES = (torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device)


def _check_loadable(obj: Any, where: str, allow_torch: bool) -> None:
    """Raise TypeError unless ``obj`` is built only from types the weights-only unpickler accepts."""
    kind = type(obj)  # exact types: subclasses pickle under their own (refused) class name
    if kind in _PLAIN_LEAVES or (allow_torch and kind in _TORCH_LEAVES):
        return
    if kind in (dict, OrderedDict, Counter):
        for key, value in obj.items():
            _check_loadable(key, f"{where} key {key!r}", allow_torch)
            _check_loadable(value, f"{where}[{key!r}]", allow_torch)
        return
    if kind in (list, tuple, set):
        for i, value in enumerate(obj):
            _check_loadable(value, f"{where}[{i}]", allow_torch)
        return
    allowed = "plain Python values" + (" and tensors" if allow_torch else "")
    raise TypeError(f"{where}: {kind.__module__}.{kind.__qualname__} cannot be saved (only {allowed})")


def _rtmkit_version() -> str:
    try:
        from rtmkit import __version__

        return str(__version__)
    except Exception:
        return "0.0.0"


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: dict,
    *,
    class_names: list[str] | None = None,
    config: dict | None = None,
    extra: dict | None = None,
) -> pathlib.Path:
    """Write an rtmkit checkpoint atomically and return its path.

    Layout (MMDetection-compatible): ``{"state_dict", "meta": {"dataset_meta": {"classes"}, "rtmkit_version"},
    "rtmkit": {"config"}, **extra}``. Everything reloads with ``torch.load(weights_only=True)``. The file is
    written to ``<path>.tmp``, fsynced, then renamed over ``path``, so an existing file is only replaced by
    a complete one.
    """
    path = pathlib.Path(path)
    weights = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entries must be str -> Tensor, got {key!r}: {type(value).__name__}")
        weights[key] = value.detach().cpu().contiguous()  # standard layout, also from channels-last nets
    meta: dict[str, Any] = {"rtmkit_version": _rtmkit_version()}
    if class_names is not None:
        meta["dataset_meta"] = {"classes": [str(name) for name in class_names]}
    if config is not None:
        _check_loadable(config, "config", allow_torch=False)
    ckpt: dict[str, Any] = {"state_dict": weights, "meta": meta, "rtmkit": {"config": config}}
    if extra:
        clash = sorted(set(extra) & set(ckpt))
        if clash:
            raise ValueError(f"extra must not override the checkpoint's own keys: {clash}")
        _check_loadable(extra, "extra", allow_torch=True)
        ckpt.update(extra)
    ckpt["rtmkit"]["sha256"] = tensors_sha256(ckpt)  # verified on load: silent corruption becomes an error

    tmp_path = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp_path, "wb") as stream:
            torch.save(ckpt, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_path, path)
    except OSError as e:  # full disk, read-only or missing folder, permissions: name the file, keep the old one
        tmp_path.unlink(missing_ok=True)
        kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
        raise CheckpointError(f"{path}: could not write the checkpoint ({e.strerror or e}){kept}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: pathlib.Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
