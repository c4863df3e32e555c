"""ONNX export and the ONNX Runtime backend: parity with PyTorch, batches, dynamic shapes, metadata, the
official OpenMMLab export, and the CLI commands."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from rtmkit import RTMDet
from rtmkit.cli import main as cli_main
from rtmkit.export.onnx import read_metadata

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NANO = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"
# In network-input pixels (the frame the graph computes in); ~1e-5 relative: the runtime's own conv kernels.
BOX_TOL_INPUT_PX = 1e-2
SCORE_TOL = 1e-4
# What the end-to-end graph does (NMS in input pixels, no clamp, no size filter, no per-level nms_pre).
GRAPH_POST = dict(conf=0.05, iou=0.6, max_det=100, clip="none", nms_space="input", min_size=-1, nms_pre=10**9)


@pytest.fixture(scope="module")
def nano(shared):
    return RTMDet("rtmdet-nano-person", weights=shared(NANO), device="cpu")


@pytest.fixture(scope="module")
def images(shared):
    import cv2

    root = shared("data/coco_tiny/val2017")
    names = ["000000300039.jpg", "000000404484.jpg", "000000357888.jpg"]
    imgs = [cv2.imread(str(root / n)) for n in names]
    imgs.insert(1, np.full((200, 300, 3), 114, np.uint8))  # an image without objects, mid-batch
    return imgs


@pytest.fixture(scope="module")
def exported(nano, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {
        "raw": nano.export(file=d / "raw.onnx", nms=False, dynamic=True),
        "e2e": nano.export(file=d / "e2e.onnx", nms=True, dynamic=True, conf=0.05, iou=0.6, max_det=100),
        "e2e_u8": nano.export(file=d / "e2e_u8.onnx", nms=True, dynamic=True, normalize=True, conf=0.05, iou=0.6),
        "static": nano.export(file=d / "static.onnx", nms=False, batch=1),
    }


def _iou(a, b):
    from rtmkit.ops.boxes import box_iou

    return box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()


def _assert_same(ref, got, scales, iou_thr=0.6):
    """Same detections, order-insensitive (scores a few 1e-6 apart may swap places). A detection may be missing
    on one side only where NMS sits on a knife edge: it overlaps another detection at an IoU within 1e-3 of the
    threshold (the runtimes' outputs differ by ~1e-5), or it was suppressed by / freed from such a flipped box.
    At most one such flip per image."""
    assert len(ref) == len(got)
    for a, b, s in zip(ref, got, scales):
        used = np.zeros(len(b), bool)
        missing_a = []
        for i, (box, score, label) in enumerate(zip(a.boxes, a.scores, a.labels)):
            err = (np.abs(b.boxes - box) * np.tile(s, 2)).max(1) if len(b) else np.zeros(0)
            ok = (~used) & (err <= BOX_TOL_INPUT_PX) & (np.abs(b.scores - score) <= SCORE_TOL) & (b.labels == label)
            if ok.any():
                used[np.flatnonzero(ok)[np.argmin(err[ok])]] = True
            else:
                missing_a.append(i)
        missing_b = list(np.flatnonzero(~used))
        if not (missing_a or missing_b):
            continue
        assert len(missing_a) <= 2 and len(missing_b) <= 2, (missing_a, missing_b)
        everyone = np.concatenate([a.boxes, b.boxes])
        for boxes in (a.boxes[missing_a], b.boxes[missing_b]):
            for box in boxes:
                ious = _iou(box[None], everyone)[0]
                borderline = np.abs(ious - iou_thr) < 1e-3
                cascade = _iou(box[None], np.concatenate([a.boxes[missing_a], b.boxes[missing_b]]))[0] > iou_thr
                assert borderline.any() or (cascade.sum() > 1), f"{box} differs without a borderline NMS decision"


def _scales(imgs, size=320):
    return [np.array([size / max(i.shape[:2])] * 2) for i in imgs]


@pytest.mark.parametrize("batch", [1, 4])
def test_raw_graph_equals_pytorch(nano, images, exported, batch):
    ref = nano.predict(images, preset="eval", batch=batch)
    got = RTMDet(exported["raw"]).predict(images, preset="eval", batch=batch)
    _assert_same(ref, got, _scales(images))
    assert len(ref[1]) == 0 and len(ref[0]) > 0  # the blank image stays empty


@pytest.mark.parametrize("key", ["e2e", "e2e_u8"])
@pytest.mark.parametrize("batch", [1, 4])
def test_end2end_graph_equals_pytorch(nano, images, exported, key, batch):
    ref = nano.predict(images, batch=batch, **GRAPH_POST)
    got = RTMDet(exported[key]).predict(images, batch=batch, conf=0.05)
    _assert_same(ref, got, _scales(images))


def test_end2end_outputs_contract_and_no_cross_talk(nano, images, exported):
    from rtmkit.data.preprocess import preprocess

    sess = ort.InferenceSession(str(exported["e2e"]))
    assert [o.name for o in sess.get_outputs()] == ["dets", "labels"]
    batch, _ = preprocess(images, 320, nano.cfg.data.mean, nano.cfg.data.std)
    dets, labels = sess.run(None, {"images": batch.numpy()})
    assert dets.shape == (4, 100, 5) and labels.shape == (4, 100) and labels.dtype == np.int64
    assert np.all(dets[1, :, 4] == 0) and np.all(labels[1] == -1)  # blank image: padding only
    valid = dets[..., 4] > 0
    assert np.all(labels[valid] == 0) and np.all(labels[~valid] == -1)
    assert np.all(np.diff(dets[..., 4], axis=1) <= 0)  # sorted by score per image
    for i in range(4):  # each image alone gives its own rows
        single_d, single_l = sess.run(None, {"images": batch[i:i + 1].numpy()})
        np.testing.assert_allclose(single_d[0], dets[i], atol=1e-4)
        np.testing.assert_array_equal(single_l[0], labels[i])


def test_dynamic_shapes_and_static_graph(nano, images, exported):
    ref = nano.predict(images, preset="eval", imgsz=256, batch=2)
    got = RTMDet(exported["raw"]).predict(images, preset="eval", imgsz=256, batch=2)
    _assert_same(ref, got, _scales(images, 256))
    static = RTMDet(exported["static"])
    _assert_same(nano.predict(images, preset="eval", batch=3), static.predict(images, preset="eval", batch=3),
                 _scales(images))  # a batch-1 graph runs a batch image by image
    with pytest.raises(ValueError, match="exported for imgsz=320"):
        static.predict(images[0], imgsz=256)


def test_metadata_round_trip(nano, exported):
    meta = read_metadata(exported["e2e_u8"])
    assert meta["names"] == ["person"] and meta["imgsz"] == 320 and meta["strides"] == [8, 16, 32]
    assert meta["mean"] == list(nano.cfg.data.mean) and meta["std"] == list(nano.cfg.data.std)
    assert meta["channel_order"] == "BGR" and meta["task"] == "detect" and meta["graph"] == "end2end"
    assert meta["normalized_in_graph"] is True and meta["input_dtype"] == "uint8"
    assert meta["nms"] == {"score_thr": 0.05, "iou_thr": 0.6, "max_det": 100, "agnostic": False}
    from rtmkit import __version__

    assert meta["rtmkit_version"] == __version__
    loaded = RTMDet(exported["e2e_u8"])
    assert loaded.names == nano.names and loaded.cfg == nano.cfg


def test_agnostic_end2end(tmp_path, shared, images):
    """Class-agnostic NMS in the graph: a 2-class model whose classes are duplicates keeps each box once."""
    model = RTMDet("rtmdet-nano-person", weights=shared(NANO), device="cpu")
    sd = model.net.state_dict()
    two = RTMDet("rtmdet-nano-person", num_classes=2, class_names=["a", "b"], device="cpu")
    for k, v in sd.items():
        if ".rtm_cls." in k:
            v = torch.cat([v, v])
        two.net.state_dict()[k].copy_(v)
    aware = RTMDet(two.export(file=tmp_path / "aware.onnx", conf=0.05, iou=0.6))
    agnostic = RTMDet(two.export(file=tmp_path / "agn.onnx", conf=0.05, iou=0.6, agnostic=True))
    one = RTMDet(model.export(file=tmp_path / "one.onnx", conf=0.05, iou=0.6))
    r_aware, r_agn, r_one = (m.predict(images[0], conf=0.05)[0] for m in (aware, agnostic, one))
    assert len(r_aware) == min(2 * len(r_one), 100)
    assert len(r_agn) == len(r_one) and np.allclose(r_agn.boxes, r_one.boxes, atol=1e-4)


@pytest.mark.parametrize("key", ["raw", "e2e", "e2e_u8"])
def test_openvino_runtime_equals_pytorch(nano, images, exported, key):
    """runtime="openvino": the same ONNX files through OpenVINO (CPU, f32) give PyTorch's detections."""
    pytest.importorskip("openvino")
    model = RTMDet(exported[key], runtime="openvino")
    assert model.runtime == "openvino"
    if key == "raw":
        ref, got = nano.predict(images, preset="eval", batch=4), model.predict(images, preset="eval", batch=4)
    else:
        ref = nano.predict(images, batch=4, **GRAPH_POST)
        got = model.predict(images, batch=4, conf=0.05, max_det=100)
    _assert_same(ref, got, _scales(images))
    assert len(got[1]) == 0 and len(got[0]) > 0


def test_runtime_argument_is_checked(nano, exported, tmp_path):
    assert RTMDet(exported["raw"], runtime="ort").runtime == "onnxruntime"
    assert RTMDet(exported["raw"]).runtime == "onnxruntime" and nano.runtime == "torch"
    with pytest.raises(ValueError, match="unknown runtime"):
        RTMDet(exported["raw"], runtime="tflite")
    with pytest.raises(ValueError, match="TensorRT engine"):
        RTMDet(tmp_path / "x.engine", runtime="openvino")
    with pytest.raises(ValueError, match="applies to exported .onnx models"):
        RTMDet("rtmdet-tiny", runtime="openvino")


def test_simplified_graphs_give_the_same_results(nano, images, exported, tmp_path):
    """--simplify (onnxslim): a smaller graph, metadata kept, detections equal the unsimplified graph's."""
    import onnx

    pytest.importorskip("onnxslim")
    for key, nms in (("raw", False), ("e2e", True)):
        path = nano.export(file=tmp_path / f"{key}_slim.onnx", nms=nms, dynamic=True, simplify=True,
                           conf=0.05, iou=0.6, max_det=100)
        meta = read_metadata(path)
        assert meta["simplified"] is True and read_metadata(exported[key])["simplified"] is False
        assert meta["graph"] == ("end2end" if nms else "raw") and meta["names"] == ["person"]
        assert len(onnx.load(str(path)).graph.node) < len(onnx.load(str(exported[key])).graph.node)
        a = RTMDet(exported[key]).predict(images, preset="eval", batch=4)
        b = RTMDet(path).predict(images, preset="eval", batch=4)
        _assert_same(a, b, _scales(images))


def test_rtmkit_export_matches_official_openmmlab_export(nano, shared, exported):
    """Our end-to-end graph vs OpenMMLab's end2end.onnx for the same weights (the official graph only runs at
    batch 1). Same detections within 0.5 px / 1e-3, except at most one borderline NMS decision."""
    import cv2

    from rtmkit.data.preprocess import preprocess

    official = ort.InferenceSession(str(shared("weights/rtmdet_nano_person/end2end.onnx")))
    ours = ort.InferenceSession(str(exported["e2e"]))
    gt = json.loads(shared("data/coco_tiny/annotations/instances_val2017.json").read_text())
    files = sorted(im["file_name"] for im in gt["images"])[:25]
    flips, total = 0, 0
    for name in files:
        img = cv2.imread(str(shared("data/coco_tiny/val2017") / name))
        batch, _ = preprocess([img], 320, nano.cfg.data.mean, nano.cfg.data.std)
        d_off = official.run(None, {"input": batch.numpy()})[0][0]
        d_our = ours.run(None, {"images": batch.numpy()})[0][0]
        d_off, d_our = d_off[d_off[:, 4] > 0], d_our[d_our[:, 4] > 0]
        total += len(d_off)
        if len(d_off) != len(d_our):
            flips += 1
            continue
        if len(d_off):
            assert np.abs(d_off - d_our).max() <= 0.5 and np.abs(d_off[:, 4] - d_our[:, 4]).max() <= 1e-3
    assert total > 200 and flips <= 1


def test_coco_ap_identical_through_onnxruntime(nano, shared, exported):
    pytest.importorskip("pycocotools")
    ann = shared("data/coco_tiny/annotations/instances_val2017.json")
    ap_torch = nano.val(ann, batch=8)["AP"]
    ap_onnx = RTMDet(exported["raw"]).val(ann, batch=8)["AP"]
    assert ap_onnx == pytest.approx(ap_torch, abs=1e-4)
    if importlib.util.find_spec("openvino") is not None:  # and through OpenVINO, from the command line
        import io
        from contextlib import redirect_stdout

        out = io.StringIO()
        with redirect_stdout(out):
            assert cli_main(["val", "--model", str(exported["raw"]), "--runtime", "openvino", "--data", str(ann)]) == 0
        line = next(x for x in out.getvalue().splitlines() if "Average Precision" in x and "0.50:0.95" in x
                    and "all" in x and "100" in x)
        assert float(line.rsplit("=", 1)[1]) == pytest.approx(ap_torch, abs=1e-3)  # printed with 3 decimals


def test_cli_export_and_benchmark(shared, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert cli_main(["export", "--model", "rtmdet-nano-person", "--weights", str(shared(NANO)), "--file", str(out),
                     "--dynamic"]) == 0
    assert read_metadata(out)["graph"] == "end2end"
    assert cli_main(["export", "--model", "rtmdet-nano-person", "--file", str(tmp_path / "raw.onnx"),
                     "--no-nms"]) == 0
    assert read_metadata(tmp_path / "raw.onnx")["graph"] == "raw"
    csv_path = tmp_path / "bench.csv"
    assert cli_main(["benchmark", "--model", "rtmdet-nano-person", "--weights", str(shared(NANO)),
                     "--formats", "torch,onnx,openvino,engine", "--batch", "1,2", "--runs", "2", "--warmup", "1",
                     "--csv", str(csv_path)]) == 0
    text = capsys.readouterr().out
    assert "forward" in text and "engine" in text
    import csv

    rows = list(csv.DictReader(open(csv_path)))
    timed = [r for r in rows if not r["note"]]
    expected = {(f, b) for f in ("torch", "onnx", "openvino") for b in ("1", "2")}
    assert {(r["format"], r["batch"]) for r in timed} == expected
    assert all(float(r["forward_ms"]) > 0 and float(r["throughput"]) > 0 for r in timed)


def test_tensorrt_engine_needs_tensorrt_or_runs(nano, tmp_path, images):
    """Without TensorRT (CPU machines, CI) the engine path fails with a clear message; with it (GPU machines),
    the FP16 engine's detections match PyTorch's at FP16 tolerance."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from rtmkit.export.tensorrt import build_engine_model

        with pytest.raises(ImportError, match="pip install tensorrt"):
            build_engine_model(nano, tmp_path)
        with pytest.raises((ImportError, RuntimeError)):
            RTMDet(tmp_path / "missing.engine")
        return
    if not torch.cuda.is_available():
        pytest.skip("tensorrt installed but no CUDA GPU")
    from rtmkit.export.tensorrt import build_engine_model

    engine = RTMDet(build_engine_model(RTMDet("rtmdet-nano-person", weights=nano.weights, device="cuda"), tmp_path,
                                       batches=(1, 4)), device="cuda")
    ref = nano.predict(images[:1], preset="deploy")[0]
    got = engine.predict(images[:1], preset="deploy")[0]
    assert abs(len(ref) - len(got)) <= 1
    for box, score in zip(ref.boxes, ref.scores):
        assert np.min(np.abs(got.boxes - box).max(1)) <= 2.0 and np.min(np.abs(got.scores - score)) <= 1e-2
