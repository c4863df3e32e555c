"""BN folding and channels-last: a faster inference net with the same outputs."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from rtmkit import RTMDet, get_config
from rtmkit.models.detector import RTMDetNet
from rtmkit.models.fuse import compile_for_inference, fuse_model
from rtmkit.models.layers import ConvBNAct


def test_fused_net_matches_golden_forward(shared):
    net = RTMDetNet(get_config("rtmdet-tiny")).eval()
    net.load_state_dict(torch.load(shared("reference/det_tiny/state_dict.pt"), weights_only=True))
    fused = fuse_model(net).to(memory_format=torch.channels_last)
    assert not any(isinstance(m.bn, torch.nn.BatchNorm2d) for m in fused.modules() if isinstance(m, ConvBNAct))
    x = torch.load(shared("reference/common/noise_inputs.pt"), weights_only=True)["forward_input"]
    ref = torch.load(shared("reference/det_tiny/forward.pt"), weights_only=True)
    with torch.inference_mode():
        cls_scores, bbox_preds = fused(x.contiguous(memory_format=torch.channels_last))
    for ours, theirs in zip(cls_scores + bbox_preds, ref["cls_scores"] + ref["bbox_preds"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
    # the original keeps its layout (and shared head convs stay shared)
    assert isinstance(net.backbone.stem[0].bn, torch.nn.BatchNorm2d)
    assert net.bbox_head.cls_convs[1][0].conv is net.bbox_head.cls_convs[0][0].conv


def test_fused_predict_matches_plain(shared):
    weights = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    image = str(shared("data/coco_tiny/val2017/000000300039.jpg"))
    plain = RTMDet("rtmdet-nano-person", weights=weights, device="cpu").predict(image, preset="eval")[0]
    model = RTMDet("rtmdet-nano-person", weights=weights, device="cpu").fuse()
    fast = model.predict(image, preset="eval")[0]
    assert len(plain) == len(fast) > 0
    torch.testing.assert_close(torch.from_numpy(fast.boxes), torch.from_numpy(plain.boxes), rtol=0, atol=1e-2)
    torch.testing.assert_close(torch.from_numpy(fast.scores), torch.from_numpy(plain.scores), rtol=0, atol=1e-4)
    assert "bbox_head.rtm_cls.0.weight" in model.net.state_dict()  # model.net untouched


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_predict_matches_plain(shared):
    """fuse(compile=True): inductor with frozen weights gives the same detections as the plain net."""
    weights = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    image = str(shared("data/coco_tiny/val2017/000000300039.jpg"))
    plain = RTMDet("rtmdet-nano-person", weights=weights, device="cpu").predict(image, preset="eval")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = RTMDet("rtmdet-nano-person", weights=weights, device="cpu").fuse(compile=True)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]  # it must really compile here
    assert isinstance(model.backend.module(), torch._dynamo.eval_frame.OptimizedModule)
    fast = model.predict(image, preset="eval")[0]
    assert len(plain) == len(fast) > 0
    # inductor re-associates some sums: boxes (original-image pixels, up to ~640) move by a few 1e-5 relative
    torch.testing.assert_close(torch.from_numpy(fast.boxes), torch.from_numpy(plain.boxes), rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(torch.from_numpy(fast.scores), torch.from_numpy(plain.scores), rtol=0, atol=1e-4)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    net = fuse_model(RTMDetNet(get_config("rtmdet-tiny")).eval())

    for error, message in ((RuntimeError("no working C++ compiler"), "RuntimeError: no working C"),
                           (AssertionError(), "AssertionError: \\)")):  # inductor often raises bare asserts

        class Broken(torch.nn.Module):
            def forward(self, x, error=error):
                raise error

        monkeypatch.setattr(torch, "compile", lambda *a, **k: Broken())
        with pytest.warns(UserWarning, match=f"torch.compile failed \\({message}"):
            out = compile_for_inference(net, 64)
        assert out is net
