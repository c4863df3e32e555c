"""What a new user meets first: fast imports, --version, `rtmkit models`, errors in CLI words, typos refused,
and one definition of every training option for the CLI and Python."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

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
    assert "rtmdet-ins-s" not in rows  # reserved names only with --all
    assert main(["models", "--all"]) == 0 and "rtmdet-r-l.coco-ms" in capsys.readouterr().out


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
