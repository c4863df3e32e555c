"""RTMDet-Ins ONNX export: raw and end-to-end graphs under ONNX Runtime and OpenVINO give PyTorch's masks (mask IoU
>= 0.99 per matched instance) on real images at batch 1 and 3 with an image without objects, and the end-to-end
graph keeps MMDeploy's output contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtmkit import RTMDet
from rtmkit.ops.boxes import box_iou

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ins(shared, tmp_path_factory):
    weights = tmp_path_factory.mktemp("ins") / "golden_ins_tiny.pth"
    torch.save({"state_dict": torch.load(shared("reference/ins_tiny/state_dict.pt"), weights_only=True)}, weights)
    return RTMDet("rtmdet-ins-tiny", weights=weights, device="cpu")


@pytest.fixture(scope="module")
def images(shared):
    """Two real COCO images (100 and 21 instances above the deploy preset's 0.3) and a blank one (none)."""
    paths = sorted(shared("data/coco_tiny/val2017").glob("*.jpg"))
    return [cv2.imread(str(shared("data/coco_tiny/val2017/000000300039.jpg"))), cv2.imread(str(paths[0])),
            np.full((300, 400, 3), 114, np.uint8)]


@pytest.fixture(scope="module")
def exported(ins, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {"raw": ins.export(file=folder / "raw.onnx", nms=False, dynamic=True),
            "end2end": ins.export(file=folder / "e2e.onnx", nms=True, dynamic=True, conf=0.3),
            "end2end_uint8": ins.export(file=folder / "e2e_u8.onnx", nms=True, conf=0.3, batch=3, normalize=True)}


def _matched_mask_ious(a, b) -> tuple[int, list[float]]:
    """Pair the detections of two results (same class, box IoU > 0.9, greedy by score); the pairs' mask IoUs."""
    if len(a) == 0 or len(b) == 0:
        return 0, []
    iou = box_iou(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes)).numpy()
    iou[a.labels[:, None] != b.labels[None]] = 0
    out = []
    for i in range(len(a)):
        j = int(iou[i].argmax())
        if iou[i, j] > 0.9:
            iou[:, j] = 0
            inter = (a.masks[i] & b.masks[j]).sum()
            out.append(float(inter / max((a.masks[i] | b.masks[j]).sum(), 1)))
    return len(out), out


@pytest.mark.parametrize("key,runtime,batch", [("raw", "onnxruntime", 1), ("raw", "onnxruntime", 3),
                                               ("end2end", "onnxruntime", 1), ("end2end", "onnxruntime", 3),
                                               ("raw", "openvino", 3), ("end2end_uint8", "onnxruntime", 3)])
def test_exported_masks_equal_pytorch(ins, images, exported, key, runtime, batch):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    ref = ins.predict(images, preset="deploy")
    assert [len(r) for r in ref] == [100, 21, 0]
    model = RTMDet(str(exported[key]), runtime=runtime)
    assert model.task == "segment"
    got = model.predict(images, preset="deploy", batch=batch)
    for i, (a, b) in enumerate(zip(ref, got)):
        assert b.masks is not None and b.masks.dtype == bool and b.masks.shape == (len(b), *images[i].shape[:2])
        matched, ious = _matched_mask_ious(a, b)
        if key == "raw":  # the same post-processing on the host: the same detections
            assert len(b) == len(a) == matched
        else:  # NMS inside the graph (no nms_pre): the same instances but at the tail of a crowded image
            assert matched >= 0.85 * len(a) and len(b) <= len(a) + 5
        assert all(v >= 0.99 for v in ious), (i, min(ious))


def test_end2end_contract_and_no_cross_talk(ins, images, exported):
    """dets [B, K, 5], labels [B, K], masks [B, K, H, W] probabilities at input resolution (MMDeploy's RTMDet-Ins
    SDK outputs); an image's outputs do not depend on the others in its batch."""
    from rtmkit.data.preprocess import preprocess

    session = ort.InferenceSession(str(exported["end2end"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["dets", "labels", "masks"]
    batch, _ = preprocess(images, 640, ins.cfg.data.mean, ins.cfg.data.std, 114, torch.device("cpu"))
    dets, labels, masks = session.run(None, {"images": batch.numpy()})
    assert dets.shape == (3, 100, 5) and labels.shape == (3, 100) and masks.shape == (3, 100, 640, 640)
    assert masks.dtype == np.float32 and 0 <= masks.min() and masks.max() <= 1 + 1e-6  # sigmoid, float rounding
    assert (labels[2] == -1).all() and (dets[2, :, 4] == 0).all()  # the blank image: no detections
    alone = session.run(None, {"images": batch.numpy()[1:2]})
    keep = labels[1] >= 0
    np.testing.assert_allclose(alone[0][0][keep], dets[1][keep], atol=1e-3)
    np.testing.assert_allclose(alone[2][0][keep], masks[1][keep], atol=1e-4)


def test_cli_export_and_predict_write_the_masks(ins, shared, tmp_path, capsys):
    """`rtmkit export --no-nms` then `rtmkit predict --model x.onnx`: predictions.json holds every detection's
    mask as COCO RLE, decoding to the masks the Python API returns for the same file and image."""
    import json

    from pycocotools import mask as mask_utils

    from rtmkit.cli import main

    weights = tmp_path / "w.pth"
    ins.save(weights)
    onnx = tmp_path / "ins_raw.onnx"
    assert main(["export", "--model", str(weights), "--file", str(onnx), "--no-nms"]) == 0
    image = shared("data/coco_tiny/val2017/000000300039.jpg")
    assert main(["predict", "--model", str(onnx), "--source", str(image), "--project", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "p/exp/predictions.json").read_text())[0]
    expected = RTMDet(str(onnx)).predict(str(image))[0]
    assert len(record["detections"]) == len(expected) > 0
    decoded = mask_utils.decode([d["mask"] for d in record["detections"]]).transpose(2, 0, 1).astype(bool)
    assert np.array_equal(decoded, expected.masks)
    assert (tmp_path / "p/exp" / image.name).exists()  # the picture with the masks drawn
