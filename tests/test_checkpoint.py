"""Tests for rtmkit.checkpoint: safe loading of official / MMEngine / malicious files, weights, saving."""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.util
import io
import os
import pickle
import random
import re
import struct
import subprocess
import sys
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rtmkit.checkpoint import (
    AttributeRef,
    CheckpointError,
    InertStub,
    checkpoint_class_names,
    checkpoint_config,
    extract_state_dict,
    load_checkpoint_file,
    load_weights,
    save_checkpoint,
)

OFFICIAL = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"
TRAINING = "weights/rtmdet_nano_person/rtmdet_nano_person_mmengine_training.pth"


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def _torch_zip_with_pickle(path: Path, data_pkl: bytes) -> Path:
    """A valid torch zip archive whose data.pkl is replaced by hand-written pickle bytes."""
    template = io.BytesIO()
    torch.save({}, template)
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, data_pkl if name.endswith("/data.pkl") else src.read(name))
    return path


def _rewrite_data_pkl(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data.replace(old, new) if name.endswith("/data.pkl") else data)
    return dst


# Protocol-2 opcodes for hand-written pickles.
PROTO2, MARK, TUPLE, REDUCE, EMPTY_DICT, SETITEMS, STOP = b"\x80\x02", b"(", b"t", b"R", b"}", b"u", b"."


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _call(func: bytes, *args: bytes) -> bytes:
    return func + MARK + b"".join(args) + TUPLE + REDUCE


def _dict_pickle(**entries: bytes) -> bytes:
    body = b"".join(_str(k) + v for k, v in entries.items())
    return PROTO2 + EMPTY_DICT + MARK + body + SETITEMS + STOP


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_payloads(marker: Path) -> dict[str, tuple]:
    return {
        "os.system": (os.system, f"touch {marker}"),
        "eval": (builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": (builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": (subprocess.call, ["touch", str(marker)]),
        "subprocess.Popen": (subprocess.Popen, ["touch", str(marker)]),
    }


class _FakeModules:
    """Temporarily make ``mmengine.fake.thing`` importable so pickle can save classes 'from' it."""

    NAMES = ("mmengine", "mmengine.fake", "mmengine.fake.thing")

    def __init__(self, **attrs):
        self.attrs = attrs

    def __enter__(self):
        assert not any(n in sys.modules for n in self.NAMES), "a real mmengine is imported"
        for name in self.NAMES:
            sys.modules[name] = types.ModuleType(name)
        for key, value in self.attrs.items():
            setattr(sys.modules["mmengine.fake.thing"], key, value)
        return self

    def __exit__(self, *exc):
        for name in self.NAMES:
            sys.modules.pop(name, None)


REAL_CODE_RAN: list[str] = []


class Thing:
    """Saved as ``mmengine.fake.thing.Thing``; none of its code may run while loading."""

    def __init__(self, value):
        self.value = value
        self.history = np.array([1.0, 0.5, 0.25])

    def __setstate__(self, state):
        REAL_CODE_RAN.append("Thing.__setstate__")
        self.__dict__.update(state)

    def describe(self):
        REAL_CODE_RAN.append("Thing.describe")


class FakeConfigDict:
    """Pickles like MMEngine's ConfigDict: a REDUCE of the class on a plain dict."""

    def __init__(self, data):
        REAL_CODE_RAN.append("FakeConfigDict.__init__")
        self.data = data

    def __reduce__(self):
        return type(self), (dict(self.data),)


for _cls in (Thing, FakeConfigDict):
    _cls.__module__ = "mmengine.fake.thing"
    _cls.__qualname__ = _cls.__name__


class _ImportSpy(importlib.abc.MetaPathFinder):
    """Records every attempt to import an OpenMMLab package (it is not in sys.modules, so finders run)."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("mmengine", "mmdet", "mmcv"):
            self.attempts.append(fullname)
        return None


@pytest.fixture
def import_spy(monkeypatch):
    spy = _ImportSpy()
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    return spy


@pytest.fixture(scope="module")
def official_ckpt(shared):
    return load_checkpoint_file(shared(OFFICIAL))


@pytest.fixture(scope="module")
def training_ckpt(shared):
    return load_checkpoint_file(shared(TRAINING))


@pytest.fixture
def synthetic_mmengine_file(tmp_path):
    """An MMEngine-style checkpoint holding fake mmengine objects, numpy values and a bound method."""
    weights = {"backbone.conv.weight": torch.randn(4, 3, 3, 3), "head.bias": torch.randn(4)}
    thing = Thing(3)
    meta = {
        "iter": np.int64(7),
        "lr": np.float32(0.5),
        "flag": np.bool_(True),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "objects": np.array([1, "x"], dtype=object),
        "structured": np.array([(1.5, (2, 3))], dtype=[("a", "<f4"), ("b", "<i2", (2,))]),
        "dtype": np.dtype("<f2"),
        "day": np.datetime64("2024-01-02", "D"),
        "dataset_meta": {"classes": ("cat", "dog")},
    }
    ckpt = {
        "state_dict": weights,
        "meta": meta,
        "message_hub": {"buffer": thing, "method": thing.describe},
        "cfg": FakeConfigDict({"lr": 0.01}),
    }
    path = tmp_path / "mmengine_style.pth"
    with _FakeModules(Thing=Thing, FakeConfigDict=FakeConfigDict):
        torch.save(ckpt, path)
    REAL_CODE_RAN.clear()
    return path, weights


# ----------------------------------------------------------------------------------------------------------
# 1-2: the real files
# ----------------------------------------------------------------------------------------------------------


def test_official_and_training_files_give_identical_weights(official_ckpt, training_ckpt):
    official = extract_state_dict(official_ckpt, OFFICIAL)
    training = extract_state_dict(training_ckpt, TRAINING)
    assert len(official) == 698
    assert official.keys() == training.keys()
    assert all(_same_bits(official[k], training[k]) for k in official)
    assert checkpoint_class_names(official_ckpt) == ["person"]
    assert checkpoint_class_names(training_ckpt) == ["person"]


def test_training_file_uses_state_dict_not_raw_ema_weights(training_ckpt):
    weights = extract_state_dict(training_ckpt, TRAINING)
    raw = training_ckpt["ema_state_dict"]
    assert all(k.startswith("module.") for k in raw if k != "steps")
    # The file deliberately stores different raw weights; picking them would change these tensors.
    differing = [k for k in weights if not _same_bits(weights[k], raw["module." + k])]
    assert differing, "state_dict and ema_state_dict are identical: the test file cannot tell them apart"
    assert isinstance(training_ckpt["message_hub"]["log_scalars"]["train/loss"], InertStub)


def test_plain_weights_only_refuses_the_training_file(shared):
    # Precondition of the stand-in machinery: torch alone cannot read this file.
    with pytest.raises(Exception, match="mmengine|numpy|Unsupported global"):
        torch.load(shared(TRAINING), weights_only=True, map_location="cpu")


def test_loading_never_imports_mmengine(shared, import_spy):
    assert "mmengine" not in sys.modules
    ckpt = load_checkpoint_file(shared(TRAINING))
    assert "mmengine" not in sys.modules
    assert not [m for m in sys.modules if m.split(".")[0] in ("mmengine", "mmdet", "mmcv")]
    assert import_spy.attempts == []
    if "iter" in ckpt["meta"]:
        assert type(ckpt["meta"]["iter"]) is int
    hub_buffer = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert type(hub_buffer).__module__ == "mmengine.logging.history_buffer"
    assert isinstance(hub_buffer.state["_log_history"], np.ndarray)
    method = hub_buffer.state["statistics_methods"]["min"]
    assert isinstance(method, AttributeRef) and method.name == "min"


def test_mmengine_is_not_installed_here():
    if importlib.util.find_spec("mmengine") is not None:
        pytest.skip("mmengine is importable in this environment")
    with pytest.raises(ImportError):
        import mmengine  # noqa: F401


def test_no_safe_globals_left_registered(shared):
    before = set(torch.serialization.get_safe_globals())
    load_checkpoint_file(shared(TRAINING))
    assert set(torch.serialization.get_safe_globals()) == before


# ----------------------------------------------------------------------------------------------------------
# 3: malicious files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", ["os.system", "eval", "exec", "subprocess.call", "subprocess.Popen"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_reduce_payload_is_refused(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    func, arg = _marker_payloads(marker)[payload]
    path = tmp_path / f"evil_{payload}.pth"
    ckpt = {"state_dict": {"w": torch.zeros(1)}, "meta": {"x": [_Exploit(func, arg)]}}
    torch.save(ckpt, path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{func.__module__}.{func.__name__}" in message  # e.g. posix.system, builtins.eval
    assert "malicious" in message and "weights_only=False" not in message
    assert not marker.exists()


def test_payload_next_to_genuine_mmengine_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mixed.pth"
    ckpt = {"state_dict": {"w": torch.zeros(1)}, "hub": Thing(1), "x": _Exploit(os.system, f"touch {marker}")}
    with _FakeModules(Thing=Thing):
        torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="posix.system|os.system") as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)
    refused = str(info.value).split("not allowed:")[1]
    assert "mmengine" not in refused  # the allowed global is not blamed
    assert not marker.exists()


def test_exploit_class_pretending_to_be_mmengine_is_refused(tmp_path):
    class Hook:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    Hook.__module__ = "mmengine.hooks.evil"
    path = tmp_path / "hook.pth"
    torch.save({"state_dict": {}, "hook": Hook()}, path)
    with pytest.raises(CheckpointError, match="system"):
        load_checkpoint_file(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("os", "system", "os.system"),
        ("posix", "system", "posix.system"),
        ("__builtin__", "eval", "builtins.eval"),
        ("builtins", "exec", "builtins.exec"),
        ("subprocess", "check_output", "subprocess.check_output"),
        ("nt", "system", "nt.system"),
    ],
)
def test_hand_written_protocol2_payload_is_refused(tmp_path, module, name, expected):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if "system" in name or "check" in name else f"open({str(marker)!r},'w')"
    data = _dict_pickle(
        state_dict=EMPTY_DICT,
        hub=_call(_global("mmengine.logging.history_buffer", "HistoryBuffer")),
        x=_call(_global(module, name), _str(command)),
    )
    path = _torch_zip_with_pickle(tmp_path / "hand.pth", data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert not marker.exists()


def test_dangerous_function_under_an_allowed_name_stays_inert(tmp_path):
    # Allowed names never resolve to real code: "mmengine.utils.system" is just a recording stub.
    marker = tmp_path / "pwned"
    fake_system = _global("mmengine.utils", "system")
    data = _dict_pickle(state_dict=EMPTY_DICT, x=_call(fake_system, _str(f"touch {marker}")))
    ckpt = load_checkpoint_file(_torch_zip_with_pickle(tmp_path / "inert.pth", data))
    assert isinstance(ckpt["x"], InertStub) and ckpt["x"].args == (f"touch {marker}",)
    assert not marker.exists()


def test_getattr_result_cannot_be_called(tmp_path):
    # getattr(stub, "__init__")(payload): the placeholder is not callable through the unpickler.
    marker = tmp_path / "pwned"
    bound = _call(_global("__builtin__", "getattr"), _global("mmengine.x", "Thing"), _str("__init__"))
    data = _dict_pickle(state_dict=EMPTY_DICT, x=_call(bound, _str(f"touch {marker}")))
    path = _torch_zip_with_pickle(tmp_path / "getattr.pth", data)
    with pytest.raises(CheckpointError, match="reduce for unrecognized function") as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value) and "weights_only=False" not in str(info.value)
    assert not marker.exists()


def test_legacy_format_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pth"
    torch.save({"x": _Exploit(os.system, f"touch {marker}")}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="system") as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_plain_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"x": _Exploit(os.system, f"touch {marker}")}, protocol=2))
    with pytest.raises(CheckpointError, match="malicious"):
        load_checkpoint_file(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# 4: broken files
# ----------------------------------------------------------------------------------------------------------


def _valid_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, buf)
    return buf.getvalue()


def _zip_without_pickle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return buf.getvalue()


def _list_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save([torch.zeros(1)], buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(random.Random(0).randbytes(4096), id="random-bytes"),
        pytest.param(_valid_bytes()[: len(_valid_bytes()) // 2], id="zip-cut-in-half"),
        pytest.param(_valid_bytes()[:-30], id="zip-missing-tail"),
        pytest.param(b"model: rtmdet\nthis is a text file\n", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(_zip_without_pickle(), id="zip-not-torch"),
        pytest.param(_list_checkpoint(), id="top-level-not-a-dict"),
        pytest.param(pickle.dumps({"a": 1}, protocol=2), id="bare-pickle"),
    ],
)
def test_broken_files_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as info:
        load_checkpoint_file(tmp_path / "nope.pth")
    assert "nope.pth" in str(info.value)
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint_file(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# extract_state_dict / class names / config
# ----------------------------------------------------------------------------------------------------------


def test_extract_state_dict_variants():
    w = torch.ones(2)
    # Bare, "model", "module." prefix, data_preprocessor dropped.
    assert extract_state_dict({"a.weight": w}) == {"a.weight": w}
    assert extract_state_dict({"model": {"a": w}, "epoch": 3}) == {"a": w}
    stripped = extract_state_dict({"state_dict": {"module.a": w, "module.data_preprocessor.mean": w}})
    assert stripped == {"a": w}
    # The prefix stays when only some keys have it; "state_dict" wins over "model" and "ema_state_dict".
    assert extract_state_dict({"state_dict": {"module.a": w, "b": w}}).keys() == {"module.a", "b"}
    picked = extract_state_dict({"state_dict": {"a": w}, "model": {"m": w}, "ema_state_dict": {"e": w}})
    assert picked.keys() == {"a"}


@pytest.mark.parametrize(
    "ckpt", [{}, {"meta": {}, "optimizer": {}}, {"state_dict": {"a": 1}}, {"state_dict": {}}, {"model": 3}]
)
def test_extract_state_dict_errors_name_the_source(ckpt):
    with pytest.raises(CheckpointError, match="my.pth"):
        extract_state_dict(ckpt, source="my.pth")


def test_class_names_and_config_accessors():
    assert checkpoint_class_names({"meta": {"dataset_meta": {"classes": ("a", "b")}}}) == ["a", "b"]
    assert checkpoint_class_names({"meta": {"dataset_meta": {"classes": ["a"]}}}) == ["a"]
    assert checkpoint_class_names({"meta": {}}) is None
    assert checkpoint_class_names({}) is None
    assert checkpoint_config({"rtmkit": {"config": {"depth": 1}}}) == {"depth": 1}
    assert checkpoint_config({"rtmkit": {}}) is None
    assert checkpoint_config({}) is None


# ----------------------------------------------------------------------------------------------------------
# 5: load_weights
# ----------------------------------------------------------------------------------------------------------


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_load_weights_correct_load_copies_values():
    source, target = _small_model(), _small_model()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    assert load_weights(target, source.state_dict()) == ([], [])
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_load_weights_missing_and_unexpected():
    model = _small_model()
    state = dict(_small_model().state_dict())
    removed = state.pop("0.weight")
    state["extra.thing"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, state, source="ckpt.pth")
    message = str(info.value)
    assert "ckpt.pth" in message and "0.weight" in message and "extra.thing" in message
    assert "missing" in message and "unexpected" in message

    with torch.no_grad():
        state["0.bias"] = torch.full((4,), 5.0)
    missing, unexpected = load_weights(model, state, strict=False)
    assert missing == ["0.weight"] and unexpected == ["extra.thing"]
    assert torch.equal(model.state_dict()["0.bias"], torch.full((4,), 5.0))
    assert not torch.equal(model.state_dict()["0.weight"], removed + 1)


def test_load_weights_shape_mismatch_is_always_an_error():
    model = _small_model()
    state = dict(model.state_dict())
    state["0.weight"] = torch.zeros(5, 3)
    before = model.state_dict()["0.bias"].clone()
    state["0.bias"] = torch.ones(4)
    for strict in (True, False):
        with pytest.raises(CheckpointError) as info:
            load_weights(model, state, strict=strict, source="x.pth")
        message = str(info.value)
        assert "0.weight" in message and "(5, 3)" in message and "(4, 3)" in message and "x.pth" in message
    assert torch.equal(model.state_dict()["0.bias"], before)  # nothing loaded


def test_load_weights_long_lists_are_truncated():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(15)])  # 30 keys
    with pytest.raises(CheckpointError) as info:
        load_weights(model, {})
    message = str(info.value)
    assert "30 missing" in message and "... and 20 more" in message
    assert "0.weight" in message and "14.bias" not in message


def test_load_weights_shared_module():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(2, 2, 1)
            self.second = self.first  # one conv under two names

    model, source = Shared(), Shared()
    state = source.state_dict()
    assert {"first.weight", "second.weight"} <= state.keys()
    assert load_weights(model, state) == ([], [])
    assert torch.equal(model.second.weight, source.first.weight)


# ----------------------------------------------------------------------------------------------------------
# 6: save_checkpoint
# ----------------------------------------------------------------------------------------------------------


def test_save_round_trip(tmp_path):
    model = _small_model()
    config = {"model": {"depth": 0.33, "widths": [32, 64], "act": "silu", "tuple": (1, 2)}, "num_classes": 2}
    path = save_checkpoint(
        tmp_path / "sub" / "dir" / "model.pth",
        model.state_dict(),
        class_names=["cat", "dog"],
        config=config,
        extra={"epoch": 12, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}}},
    )
    assert path == tmp_path / "sub" / "dir" / "model.pth" and path.is_file()
    assert not path.with_name(path.name + ".tmp").exists()
    direct = torch.load(path, weights_only=True, map_location="cpu")  # no stand-ins needed
    assert isinstance(direct["meta"]["rtmkit_version"], str)
    ckpt = load_checkpoint_file(path)
    assert checkpoint_class_names(ckpt) == ["cat", "dog"]
    assert checkpoint_config(ckpt) == config
    assert ckpt["epoch"] == 12
    weights = extract_state_dict(ckpt, str(path))
    assert weights.keys() == model.state_dict().keys()
    assert all(type(v) is torch.Tensor and not v.requires_grad for v in weights.values())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert load_weights(_small_model(), weights) == ([], [])


def test_save_without_names_or_config(tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", {"w": torch.ones(1)})
    ckpt = load_checkpoint_file(path)
    assert checkpoint_class_names(ckpt) is None and checkpoint_config(ckpt) is None


def test_save_failure_keeps_the_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", {"w": torch.ones(3)})
    original = path.read_bytes()
    with pytest.raises((TypeError, pickle.PicklingError)):
        save_checkpoint(path, {"w": torch.zeros(3)}, extra={"lock": threading.Lock()})
    with pytest.raises(TypeError):  # picklable but not reloadable with weights_only: refused up front
        save_checkpoint(path, {"w": torch.zeros(3)}, extra={"obj": _Exploit(print, "x")})
    with pytest.raises(TypeError):
        save_checkpoint(path, {"w": torch.zeros(3)}, config={"t": torch.zeros(1)})
    with pytest.raises(ValueError):
        save_checkpoint(path, {"w": torch.zeros(3)}, extra={"state_dict": {}})
    assert path.read_bytes() == original
    assert not path.with_name(path.name + ".tmp").exists()


def test_save_interrupted_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pth", {"w": torch.ones(3)})
    original = path.read_bytes()

    def crash_mid_write(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: could not write the checkpoint (disk full); "
                                                        "the previous m.pth is unchanged")):
        save_checkpoint(path, {"w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert not path.with_name(path.name + ".tmp").exists()
    assert torch.equal(extract_state_dict(load_checkpoint_file(path))["w"], torch.ones(3))


def test_save_replaces_an_existing_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pth", {"w": torch.ones(3)})
    save_checkpoint(path, {"w": torch.zeros(3)})
    assert torch.equal(extract_state_dict(load_checkpoint_file(path))["w"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


# ----------------------------------------------------------------------------------------------------------
# 7: synthetic MMEngine-style file
# ----------------------------------------------------------------------------------------------------------


def test_synthetic_mmengine_checkpoint_loads_with_inert_stubs(synthetic_mmengine_file, import_spy):
    path, weights = synthetic_mmengine_file
    with pytest.raises(Exception, match="mmengine|numpy|Unsupported"):
        torch.load(path, weights_only=True)

    before = set(torch.serialization.get_safe_globals())
    ckpt = load_checkpoint_file(path)
    assert set(torch.serialization.get_safe_globals()) == before
    assert "mmengine" not in sys.modules and import_spy.attempts == []
    assert REAL_CODE_RAN == []

    buffer = ckpt["message_hub"]["buffer"]
    assert isinstance(buffer, InertStub) and not isinstance(buffer, Thing)
    assert buffer.stub_name == "mmengine.fake.thing.Thing"
    assert type(buffer).__module__ == "mmengine.fake.thing" and type(buffer).__qualname__ == "Thing"
    assert buffer.state["value"] == 3
    np.testing.assert_array_equal(buffer.state["history"], [1.0, 0.5, 0.25])
    method = ckpt["message_hub"]["method"]
    assert isinstance(method, AttributeRef) and method.obj is buffer and method.name == "describe"
    cfg = ckpt["cfg"]
    assert isinstance(cfg, InertStub) and cfg.args == ({"lr": 0.01},)

    extracted = extract_state_dict(ckpt, str(path))
    assert extracted.keys() == weights.keys()
    assert all(torch.equal(extracted[k], weights[k]) for k in weights)
    assert checkpoint_class_names(ckpt) == ["cat", "dog"]

    meta = ckpt["meta"]
    assert type(meta["iter"]) is int and meta["iter"] == 7
    assert type(meta["lr"]) is float and meta["lr"] == 0.5
    assert meta["flag"] is True
    assert meta["big_endian"].dtype == np.dtype(">i4")
    np.testing.assert_array_equal(meta["big_endian"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(meta["fortran"], np.arange(6.0).reshape(2, 3))
    assert meta["objects"].dtype == object and list(meta["objects"]) == [1, "x"]
    assert meta["structured"]["a"][0] == 1.5 and list(meta["structured"]["b"][0]) == [2, 3]
    assert meta["dtype"] == np.dtype("<f2")
    assert str(meta["day"]) == "2024-01-02"

    # Stub classes are made per load.
    again = load_checkpoint_file(path)
    assert type(again["message_hub"]["buffer"]) is not type(buffer)


def test_old_numpy_core_names_are_understood(synthetic_mmengine_file, tmp_path):
    path, _ = synthetic_mmengine_file
    old = _rewrite_data_pkl(path, tmp_path / "old_numpy.pth", b"numpy._core.", b"numpy.core.")
    with zipfile.ZipFile(old) as archive:
        data = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    meta = load_checkpoint_file(old)["meta"]
    assert type(meta["iter"]) is int and meta["iter"] == 7
    np.testing.assert_array_equal(meta["big_endian"], np.arange(6).reshape(2, 3))


# ----------------------------------------------------------------------------------------------------------
# 8: which scan lists the globals
# ----------------------------------------------------------------------------------------------------------


def test_torch_scan_lists_the_globals_when_available(synthetic_mmengine_file, monkeypatch):
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        pytest.skip("torch < 2.5 has no get_unsafe_globals_in_checkpoint")
    real = torch.serialization.get_unsafe_globals_in_checkpoint
    calls: list[list[str]] = []

    def spy(f):
        calls.append(real(f))
        return calls[-1]

    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint", spy)
    path, _ = synthetic_mmengine_file
    ckpt = load_checkpoint_file(path)
    assert len(calls) == 1 and "mmengine.fake.thing.Thing" in calls[0]
    buffer = ckpt["message_hub"]["buffer"]
    assert isinstance(buffer, InertStub) and buffer.stub_name == "mmengine.fake.thing.Thing"
    assert type(ckpt["meta"]["iter"]) is int and ckpt["meta"]["iter"] == 7


def test_own_scan_still_works_without_the_torch_function(synthetic_mmengine_file, shared, tmp_path, monkeypatch):
    # As on torch < 2.5: the opcode scan alone must give the same stand-ins and the same refusals.
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint", raising=False)
    path, weights = synthetic_mmengine_file
    ckpt = load_checkpoint_file(path)
    assert REAL_CODE_RAN == []
    buffer = ckpt["message_hub"]["buffer"]
    assert isinstance(buffer, InertStub) and type(buffer).__module__ == "mmengine.fake.thing"
    assert ckpt["message_hub"]["method"].obj is buffer
    assert type(ckpt["meta"]["iter"]) is int and ckpt["meta"]["big_endian"].dtype == np.dtype(">i4")
    assert all(torch.equal(extract_state_dict(ckpt)[k], weights[k]) for k in weights)

    training = load_checkpoint_file(shared(TRAINING))
    assert isinstance(training["message_hub"]["log_scalars"]["train/loss"], InertStub)
    assert len(extract_state_dict(training, TRAINING)) == 698

    marker = tmp_path / "pwned"
    data = _dict_pickle(state_dict=EMPTY_DICT, x=_call(_global("__builtin__", "eval"), _str(f"open({str(marker)!r})")))
    with pytest.raises(CheckpointError, match="malicious") as info:
        load_checkpoint_file(_torch_zip_with_pickle(tmp_path / "hand.pth", data))
    assert "builtins.eval (written as __builtin__.eval)" in str(info.value)
    assert not marker.exists()
