"""Configs split into network / input / post-processing, one name table, stored configs read back."""

from __future__ import annotations

import pytest

from rtmkit.catalog import CONFIGS, MODELS, UnsupportedModelError, config_from_dict, get_config, lookup
from rtmkit.config import RTMDetConfig


def test_replace_routes_flat_fields_and_refuses_unknown_ones():
    cfg = get_config("rtmdet-s", input_size=416, widen_factor=0.25, num_classes=3, eval={"iou_thr": 0.5})
    assert cfg.data.input_size == 416 and cfg.net.widen_factor == 0.25 and cfg.num_classes == 3
    assert cfg.eval.iou_thr == 0.5 and cfg.eval.score_thr == CONFIGS["rtmdet-s"].eval.score_thr
    assert CONFIGS["rtmdet-s"].data.input_size == 640  # the table is not mutated
    with pytest.raises(TypeError, match="unknown config field.*'input_szie'"):
        get_config("rtmdet-s", input_szie=416)


def test_explicit_task_and_size():
    assert [CONFIGS[f"rtmdet-{s}"].size for s in ("tiny", "s", "m", "l", "x")] == ["tiny", "s", "m", "l", "x"]
    assert CONFIGS["rtmdet-nano-person"].size == "nano" and CONFIGS["rtmdet-m-person"].size == "m"
    assert {n for n, c in CONFIGS.items() if c.task != "detect"} == (
        {f"rtmdet-ins-{s}" for s in ("tiny", "s", "m", "l", "x")} | {f"rtmdet-r-{s}" for s in ("tiny", "s", "m", "l")})
    assert all(CONFIGS[f"rtmdet-ins-{s}"].task == "segment" for s in ("tiny", "s", "m", "l", "x"))
    assert all(CONFIGS[f"rtmdet-r-{s}"].task == "rotated" for s in ("tiny", "s", "m", "l"))
    # the R networks are the detectors' of the same size (exp_on_reg included) with 15 DOTA classes at 1024
    for s in ("tiny", "s", "m", "l"):
        r, d = CONFIGS[f"rtmdet-r-{s}"], CONFIGS[f"rtmdet-{s}"]
        assert r.net == d.net and r.num_classes == 15 and r.data.input_size == 1024 and r.size == d.size


def test_round_trip_and_files_of_rtmkit_0_1():
    cfg = get_config("rtmdet-nano-person", input_size=256)
    assert RTMDetConfig.from_dict(cfg.to_dict()) == cfg
    flat = {"name": "rtmdet-nano-person", "deepen_factor": 0.33, "widen_factor": 0.25, "arch": "P5",
            "neck_blocks": 1, "exp_on_reg": False, "depthwise": True, "share_conv": False,
            "channel_attention": True, "expand_ratio": 0.5, "stacked_convs": 2, "pred_kernel_size": 1,
            "num_classes": 1, "input_size": 256, "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395],
            "pad_value": 114, "eval": cfg.eval.__dict__, "class_names": ["person"]}  # how 0.1 stored configs
    assert config_from_dict(flat) == cfg  # size filled in from the table


def test_one_name_table():
    assert set(CONFIGS) <= set(MODELS)
    assert MODELS["rtmdet-r-l.coco-ms"].arch == "rtmdet-r-l"  # other weights of a listed architecture
    assert lookup("RTMDet_S") is MODELS["rtmdet-s"]
    with pytest.raises(UnsupportedModelError, match="reserved"):
        get_config("rtmdet-r-tiny-hrsc")
    with pytest.raises(KeyError, match="unknown model"):
        get_config("rtmdet-huge")
