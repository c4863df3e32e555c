"""What a new user meets first: fast imports, --version, `rtmkit models`, errors in CLI words, typos refused,
and one definition of every training option for the CLI and Python."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from rtmkit import __version__
from rtmkit.cli import build_parser, main
from rtmkit.engine.args import TrainArgs


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_and_help_do_not_load_torch():
    assert "torch" not in _modules_after("import rtmkit")
    loaded = _modules_after("from rtmkit.cli import build_parser\nbuild_parser().format_help()")
    assert "torch" not in loaded and "cv2" not in loaded


def test_version_and_models(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rtmkit {__version__}"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.startswith("rtmdet")}
    assert rows["rtmdet-s"][1:5] == ["detect", "s", "640", "80"] and rows["rtmdet-s"][5].endswith("-387a891e.pth")
    assert rows["rtmdet-nano"][5:] == ["none", "(train", "your", "own)"]
    assert rows["rtmdet-ins-s"][1:5] == ["segment", "s", "640", "80"]
    assert rows["rtmdet-r-s"][1:5] == ["rotated", "s", "1024", "15"]
    assert "rtmdet-r-tiny-hrsc" not in rows  # reserved names only with --all
    assert main(["models", "--all"]) == 0 and "rtmdet-r-tiny-hrsc" in capsys.readouterr().out


def test_errors_in_cli_words(capsys):
    assert main(["predict", "--model", "rtmdet-huge"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rtmkit predict: error: unknown model 'rtmdet-huge'") and "\"unknown" not in err
    assert main(["predict", "--model", "rtmdet-nano", "--device", "tpu"]) == 1
    assert "use cpu, cuda, cuda:N or a GPU index" in capsys.readouterr().err


def test_training_typos_are_refused():
    from rtmkit.engine.trainer import train

    with pytest.raises(TypeError, match="'epocs' \\(did you mean 'epochs'\\?\\)"):
        train(model="rtmdet-nano", data="x.json", epocs=10)
    with pytest.raises(TypeError, match="'epocs'"):
        from rtmkit import RTMDet

        RTMDet("rtmdet-nano", device="cpu").train(data="x.json", epocs=10)


def test_every_training_option_is_a_cli_flag():
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest: a for a in train_parser._actions}
    for f in dataclasses.fields(TrainArgs):
        assert f.name in dests, f.name
        assert dests[f.name].default is None  # "not given": the dataclass default applies
        assert dests[f.name].help, f.name
    args = train_parser.parse_args(["--stage2-epochs", "3", "--freeze-bn", "--lr", "0.01", "--resume"])
    assert (args.stage2_epochs, args.freeze_bn, args.lr, args.resume) == (3, True, 0.01, True)


def test_no_false_fresh_weights_warning_for_exported_models(tmp_path, capsys):
    from rtmkit import RTMDet

    path = RTMDet("rtmdet-nano", device="cpu").export("onnx", tmp_path / "nano.onnx", nms=False)
    assert main(["predict", "--model", str(path), "--no-save", "--project", str(tmp_path / "p")]) == 0
    assert "freshly initialised" not in capsys.readouterr().err
    assert main(["predict", "--model", "rtmdet-nano", "--no-save", "--project", str(tmp_path / "q")]) == 0
    assert "freshly initialised" in capsys.readouterr().err  # a config name without weights does warn


def test_optional_dependencies_say_how_to_install(monkeypatch):
    """Without the optional packages, each feature names the pip command instead of 'No module named ...'."""
    import builtins

    from rtmkit import RTMDet
    from rtmkit.results import Result

    real_import = builtins.__import__
    missing = {"onnx", "onnxruntime", "openvino", "supervision", "tensorrt"}

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in missing:
            raise ImportError(f"No module named '{name}'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    model = RTMDet("rtmdet-nano", device="cpu")
    with pytest.raises(ImportError, match=r"pip install 'rtmkit\[onnx\]'"):
        model.export("onnx", "/tmp/never.onnx")
    with pytest.raises(ImportError, match="pip install"):
        RTMDet("/tmp/never.onnx")
    with pytest.raises(ImportError, match="pip install openvino"):
        RTMDet("/tmp/never.onnx", runtime="openvino")
    with pytest.raises(ImportError, match="pip install supervision"):
        Result(None, np.zeros(0, np.float32), np.zeros(0, int), {}, (1, 1)).to_supervision()
    from rtmkit.export.tensorrt import build_engine

    with pytest.raises(ImportError, match="pip install tensorrt"):
        build_engine("/tmp/never.onnx")
