"""RTMDet-Ins parity with the official implementation (shared/reference/ins_tiny and the key lists of all five
sizes): network, predictions and masks, losses, assignment and gradients. The configs are built from the detection
ones (the Ins networks share backbone and neck settings with the detectors of the same size) and checked against
the catalog's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtmkit import get_config
from rtmkit.models.detector import RTMDetNet
from rtmkit.models.head_ins import dynamic_kernel_size
from rtmkit.structures import SegOutputs

SIZES = {"rtmdet-ins_tiny": "rtmdet-tiny", "rtmdet-ins_s": "rtmdet-s", "rtmdet-ins_m": "rtmdet-m",
         "rtmdet-ins_l": "rtmdet-l", "rtmdet-ins_x": "rtmdet-x"}


def _ins_config(det_name: str):
    return get_config(det_name).replace(name=det_name.replace("rtmdet-", "rtmdet-ins-"), task="segment")


def _load(path):
    return torch.load(path, weights_only=True, map_location="cpu")


def test_dynamic_kernel_has_169_parameters():
    assert dynamic_kernel_size() == 10 * 8 + 8 * 8 + 8 * 1 + 8 + 8 + 1 == 169


@pytest.mark.parametrize("ref_name", list(SIZES))
def test_state_dict_keys_shapes_and_param_counts(shared, ref_name):
    ref = json.loads(shared("reference/keys_all_sizes.json").read_text())[ref_name]
    net = RTMDetNet(_ins_config(SIZES[ref_name]))
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert ours == ref["keys"]  # same names, same shapes, same order (reg_convs listed as in the reference)
    assert sum(p.numel() for p in net.parameters()) == ref["num_params"]
    assert len(ours) == ref["num_state_dict_keys"]
    tensors = net.state_dict(keep_vars=True)
    for group in ref["shared_key_groups"]:  # one tensor behind every name of a group (cls = reg towers, BNs too)
        assert len({tensors[k].data_ptr() for k in group}) == 1, group
    kernel = [k for k in tensors if k.startswith("bbox_head.kernel_convs.") and k.endswith("conv.weight")]
    assert len({tensors[k].data_ptr() for k in kernel}) == len(kernel)  # kernel towers are not shared


def test_forward_matches_golden(shared):
    """All four raw outputs of the official ins-tiny weights (perturbed, see the golden README) on the stored
    input: <= 1e-4 (the issue's bound)."""
    net = RTMDetNet(_ins_config("rtmdet-tiny")).eval()
    net.load_state_dict(_load(shared("reference/ins_tiny/state_dict.pt")), strict=True)
    x = _load(shared("reference/common/noise_inputs.pt"))["forward_input"]
    ref = _load(shared("reference/ins_tiny/forward.pt"))
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, SegOutputs)
    cls_scores, bbox_preds, kernel_preds, mask_feat = out  # unpacks in the reference's forward order
    pairs = list(zip(cls_scores + bbox_preds + kernel_preds, ref["cls_scores"] + ref["bbox_preds"]
                     + ref["kernel_preds"])) + [(mask_feat, ref["mask_feat"])]
    assert len(pairs) == 10
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() <= 1e-4
    assert all((b >= 0).all() for b in bbox_preds)  # ReLU distances


def _ins_tiny(shared):
    net = RTMDetNet(_ins_config("rtmdet-tiny")).eval()
    net.load_state_dict(_load(shared("reference/ins_tiny/state_dict.pt")), strict=True)
    return net


def test_predictions_and_masks_match_golden(shared):
    """Both real COCO images through the Ins test path: the 100 detections of each (boxes <= 1e-3 px, scores
    <= 1e-5, labels equal), the masks of the top 20 equal but for boundary ties (pixels whose probability is within
    1e-4 of the 0.5 threshold, counted), and every mask's area within those ties."""
    from rtmkit.config import PostprocessConfig
    from rtmkit.models.masks import mask_logits, paste_masks, resize_mask_logits
    from rtmkit.models.postprocess import decode, postprocess
    from rtmkit.ops.boxes import grid_priors
    from rtmkit.ops.levels import flatten_levels, level_sizes

    net = _ins_tiny(shared)
    inp = _load(shared("reference/common/coco_predict_inputs.pt"))
    ref = _load(shared("reference/ins_tiny/predict.pt"))
    tc = ref["test_cfg"]
    cfg = PostprocessConfig(score_thr=tc["score_thr"], iou_thr=tc["nms"]["iou_threshold"], nms_pre=tc["nms_pre"],
                            max_per_img=tc["max_per_img"])
    with torch.no_grad():
        out = net(inp["batch_inputs"])
    scales = torch.tensor([m["scale_factor"] for m in inp["img_metas"]], dtype=torch.float64)
    dets = postprocess(decode(out, net.strides), cfg, scales)
    priors = grid_priors(level_sizes(out.cls_scores), net.strides, with_stride=True)[:, :3]
    kernels = flatten_levels(out.kernel_preds)
    ties = 0
    for i, (det, r) in enumerate(zip(dets, ref["per_image"])):
        assert len(det.scores) == r["num_dets"] == 100
        assert (det.boxes - r["all_bboxes"]).abs().max().item() <= 1e-3
        assert (det.scores - r["all_scores"]).abs().max().item() <= 1e-5
        assert torch.equal(det.labels, r["all_labels"])
        meta = inp["img_metas"][i]
        with torch.no_grad():
            logits = mask_logits(out.mask_feat[i], kernels[i, det.prior_inds], priors[det.prior_inds])
        masks = paste_masks(logits, meta["scale_factor"], meta["ori_shape"][:2], tc["mask_thr_binary"])
        assert masks.shape == (100, *meta["ori_shape"][:2]) and masks.dtype == torch.bool
        k = r["num_stored"]
        differ = masks[:k] != r["masks"]
        if differ.any():  # only ties: the probabilities the threshold saw
            prob = resize_mask_logits(logits[:k], meta["scale_factor"], meta["ori_shape"][:2]).sigmoid()
            assert (prob[differ] - 0.5).abs().max().item() < 1e-4
        ties += int(differ.sum())
        assert (masks.sum((1, 2)) - r["mask_areas_all"]).abs().max().item() <= 3
    assert ties <= 10  # of 2 x 20 masks, about 200 000 pixels each


def test_fast_mask_pasting_gives_the_reference_bits(shared):
    """paste_masks (regions, logit-space threshold) against the reference's literal path (x8 upsampling, resize to
    the rescaled padded size, crop, sigmoid > thr) on the 100 real mask logits of a golden image, at the golden
    scale, at scale 1 and at a down-scale, for three thresholds: equal but for ties (probability within 1e-5 of
    the threshold). With ``boxes``: the same masks cleared outside each box."""
    from rtmkit.config import PostprocessConfig
    from rtmkit.models.masks import mask_logits, paste_masks, resize_mask_logits
    from rtmkit.models.postprocess import decode, postprocess
    from rtmkit.ops.boxes import grid_priors
    from rtmkit.ops.levels import flatten_levels, level_sizes

    net = _ins_tiny(shared)
    inp = _load(shared("reference/common/coco_predict_inputs.pt"))
    with torch.no_grad():
        out = net(inp["batch_inputs"][:1])
        meta = inp["img_metas"][0]
        scale = torch.tensor([meta["scale_factor"]], dtype=torch.float64)
        det = postprocess(decode(out, net.strides), PostprocessConfig(0.05, 0.6, 1000, 100), scale)[0]
        priors = grid_priors(level_sizes(out.cls_scores), net.strides, with_stride=True)[:, :3]
        logits = mask_logits(out.mask_feat[0], flatten_levels(out.kernel_preds)[0, det.prior_inds],
                             priors[det.prior_inds])
    assert logits.shape[0] == 100
    flips = 0
    for scale_factor, hw in ((meta["scale_factor"], meta["ori_shape"][:2]), ((1.0, 1.0), (480, 640)),
                             ((1.6, 1.6), (400, 300))):
        prob = resize_mask_logits(logits, scale_factor, hw).sigmoid()
        for thr in (0.3, 0.5, 0.8):
            fast = paste_masks(logits, scale_factor, hw, thr)
            differ = fast != (prob > thr)
            if differ.any():
                assert (prob[differ] - thr).abs().max().item() < 1e-5
            flips += int(differ.sum())
            assert fast.sum() > 0
    assert flips <= 20  # of 9 x 100 masks of up to 300 000 pixels
    boxes = det.boxes
    cropped = paste_masks(logits, meta["scale_factor"], meta["ori_shape"][:2], 0.5, boxes=boxes)
    full = paste_masks(logits, meta["scale_factor"], meta["ori_shape"][:2], 0.5)
    ys, xs = torch.meshgrid(torch.arange(full.shape[1]) + 0.5, torch.arange(full.shape[2]) + 0.5, indexing="ij")
    inside = ((xs >= boxes[:, 0, None, None]) & (xs <= boxes[:, 2, None, None]) & (ys >= boxes[:, 1, None, None])
              & (ys <= boxes[:, 3, None, None]))
    assert torch.equal(cropped, full & inside) and (full & ~inside).any()


def test_predict_api_gives_golden_masks(shared, tmp_path):
    """RTMDet("rtmdet-ins-tiny").predict(preset="eval"): Result.masks in original pixels, the plain net
    (fuse=False) with the golden detections and masks (ties only), the default fused net within float rounding."""
    from rtmkit import RTMDet

    weights = tmp_path / "golden_ins_tiny.pth"
    torch.save({"state_dict": _load(shared("reference/ins_tiny/state_dict.pt"))}, weights)
    model = RTMDet("rtmdet-ins-tiny", weights=weights, device="cpu")
    assert model.task == "segment"
    inp = _load(shared("reference/common/coco_predict_inputs.pt"))
    ref = _load(shared("reference/ins_tiny/predict.pt"))
    images = [img.numpy() for img in inp["images"]]
    for fuse, max_ties in ((False, 10), (True, 20)):
        for r, ref_img, img in zip(model.predict(images, preset="eval", batch=2, fuse=fuse), ref["per_image"], images):
            assert len(r) == ref_img["num_dets"]
            assert np.abs(r.boxes - ref_img["all_bboxes"].numpy()).max() <= (1e-3 if not fuse else 1e-2)
            assert np.abs(r.scores - ref_img["all_scores"].numpy()).max() <= (1e-5 if not fuse else 1e-4)
            assert r.masks.dtype == bool and r.masks.shape == (len(r), *img.shape[:2])
            k = ref_img["num_stored"]
            assert int((r.masks[:k] != ref_img["masks"].numpy()).sum()) <= max_ties
            assert np.abs(r.masks.sum((1, 2)) - ref_img["mask_areas_all"].numpy()).max() <= 3


def test_segm_ap_equals_pycocotools_on_the_same_rles(shared, tmp_path):
    """model.val on real COCO images with the Ins golden weights: box and mask AP, and the mask AP equals
    pycocotools' COCOeval(iouType="segm") run independently on the saved predictions (RLEs) and the annotation
    file (all 12 numbers); the RLEs decode to the model's masks."""
    from conftest import pycocotools_eval
    from pycocotools import mask as mask_utils

    from rtmkit import RTMDet

    weights = tmp_path / "golden_ins_tiny.pth"
    torch.save({"state_dict": _load(shared("reference/ins_tiny/state_dict.pt"))}, weights)
    model = RTMDet("rtmdet-ins-tiny", weights=weights, device="cpu")
    val_json = shared("data/coco_tiny/annotations/instances_val2017.json")
    ids = [im["id"] for im in json.loads(val_json.read_text())["images"]][:8]
    saved = tmp_path / "dets.json"
    stats = model.val(val_json, image_ids=ids, save_json=saved, batch=1)  # as predict() below: the same bits
    dets = json.loads(saved.read_text())
    assert dets and all("segmentation" in d for d in dets)
    theirs, ev = pycocotools_eval(val_json, saved, "segm", ids)
    for name, value in theirs.items():
        assert stats[f"mask_{name}"] == pytest.approx(value, abs=1e-12), name
    assert set(stats["per_class_mask_AP"]) == set(stats["per_class_AP"])  # (the perturbed weights score ~0 AP)
    # the RLEs are the predicted masks
    img = ev.cocoGt.loadImgs(ids[0])[0]
    path = shared("data/coco_tiny/val2017") / img["file_name"]
    r = model.predict(str(path), preset="eval")[0]
    first = [d for d in dets if d["image_id"] == ids[0]]
    assert len(first) == len(r)
    decoded = mask_utils.decode([{"size": d["segmentation"]["size"], "counts": d["segmentation"]["counts"]}
                                 for d in first]).transpose(2, 0, 1).astype(bool)
    assert np.array_equal(decoded, r.masks)


def test_losses_assignment_and_gradients_match_golden(shared):
    """RTMDet(...).loss on the golden train-mode batch: loss_cls, loss_bbox, loss_mask (the assigner's soft centre
    prior at each mask's centre of mass; Dice at stride 4) equal to the reference's, the same assignment, and
    every listed gradient as tight as the detection test's (head bit-identical; backbone within float rounding
    of the backward kernels)."""
    from rtmkit import RTMDet
    from rtmkit.engine.criterion_ins import center_of_mass

    golden = _load(shared("reference/ins_tiny/loss.pt"))
    x = _load(shared(f"reference/{golden['input_file']}"))[golden["input_key"]]
    model = RTMDet("rtmdet-ins-tiny", device="cpu")
    model.net.load_state_dict(_load(shared("reference/ins_tiny/state_dict.pt")), strict=True)
    model.net.train()
    targets = [{"boxes": g["bboxes"], "labels": g["labels"], "masks": g["masks"]} for g in golden["gt_instances"]]
    losses, details = model.loss(x, targets, return_details=True)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_mask"}
    for name, ref in golden["losses"].items():
        assert abs(losses[name].item() - float(ref)) <= 1e-4 * abs(float(ref)), name
    for i, ref in enumerate(golden["assign"]):
        assert torch.equal((details.assign.gt_inds[i] + 1).clamp(min=0), ref["gt_inds"])
    # the centre of mass on the integer pixel grid: an ellipse inscribed in a box has its centre at the box centre
    # minus half a pixel (pixel (x, y) covers [x, x + 1))
    g = golden["gt_instances"][0]
    boxes = g["bboxes"]
    assert torch.allclose(center_of_mass(g["masks"]), (boxes[:, :2] + boxes[:, 2:]) / 2 - 0.5, atol=0.05)
    # BN statistics after the train-mode forward: the aliased cls/reg tower ran twice, as in the reference
    modules = dict(model.net.named_modules())
    assert len(golden["bn_running_after"]) == 80
    for name, ref in golden["bn_running_after"].items():
        bn = modules[name]
        assert torch.equal(bn.running_mean, ref["running_mean"]), name
        assert torch.equal(bn.running_var, ref["running_var"]), name
        assert int(bn.num_batches_tracked) == ref["num_batches_tracked"], name
    sum(losses.values()).backward()
    params = dict(model.net.named_parameters())
    for name, ref in golden["grads"].items():
        ours = params[name].grad
        assert ours is not None, name
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6 * max(1.0, float(ref.abs().max()))), name
        assert float((ours - ref).norm() / ref.norm()) <= 1e-5, name
        if name.startswith("bbox_head."):
            assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6), name
