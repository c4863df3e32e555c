"""Training loss: DynamicSoftLabelAssigner, QFL, GIoU and their normalisation, against the golden
``det_tiny/loss.pt`` of shared/reference (mmdet 3.3.0) and against hand-computed and brute-force references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import rtmkit.engine.assigner as assigner_module
from rtmkit import get_config
from rtmkit.engine.assigner import DynamicSoftLabelAssigner, box_overlaps, negative_class_cost, soft_class_cost
from rtmkit.engine.criterion import RTMDetCriterion, collate_targets
from rtmkit.engine.losses import giou_loss, quality_focal_loss
from rtmkit.models.detector import RTMDetNet
from rtmkit.ops.boxes import grid_priors
from rtmkit.structures import DetOutputs

STRIDES = (8, 16, 32)


def _load(path):
    return torch.load(path, weights_only=True, map_location="cpu")


def _flatten(outs, channels):
    return torch.cat([o.permute(0, 2, 3, 1).reshape(o.shape[0], -1, channels) for o in outs], 1)


def _targets(gt_instances):
    return [{"boxes": g["bboxes"], "labels": g["labels"]} for g in gt_instances]


# --------------------------------------------------------------------------------------------------------------
# Golden det_tiny/loss.pt
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden(shared):
    return _load(shared("reference/det_tiny/loss.pt"))


@pytest.fixture(scope="module")
def trained_step(shared, golden):
    """Train-mode forward + loss + backward of the total loss, once, from the golden state dict and input."""
    net = RTMDetNet(get_config("rtmdet-tiny"))
    net.load_state_dict(_load(shared("reference/det_tiny/state_dict.pt")), strict=True)
    net.train()
    x = _load(shared("reference/common/noise_inputs.pt"))["loss_input"]
    criterion = RTMDetCriterion(net.cfg.num_classes, net.strides)
    losses, details = criterion(net(x), _targets(golden["gt_instances"]), return_details=True)
    total = losses["loss_cls"] + losses["loss_bbox"]
    total.backward()
    return net, losses, details, total


def _rel(a, b):
    a, b = (float(t.detach()) if torch.is_tensor(t) else float(t) for t in (a, b))
    return abs(a - b) / abs(b)


def test_user_facing_loss_equals_golden(shared, golden, tmp_path, trained_step):
    """``RTMDet(...).loss(images, targets)``: the task's criterion on ``model.net``, the same numbers."""
    from rtmkit import RTMDet

    weights = tmp_path / "tiny.pth"
    torch.save({"state_dict": _load(shared("reference/det_tiny/state_dict.pt"))}, weights)
    model = RTMDet("rtmdet-tiny", weights=weights, device="cpu")
    model.net.train()
    x = _load(shared("reference/common/noise_inputs.pt"))["loss_input"]
    losses = model.loss(x, _targets(golden["gt_instances"]))
    _, expected, _, _ = trained_step
    for key in ("loss_cls", "loss_bbox"):
        assert torch.equal(losses[key].detach(), expected[key].detach())
        assert _rel(losses[key], golden["losses"][key]) <= 1e-4


def test_golden_losses_and_per_level(golden, trained_step):
    _, losses, details, total = trained_step
    assert set(losses) == {"loss_cls", "loss_bbox"}
    for key in ("loss_cls", "loss_bbox"):
        assert losses[key].dtype == torch.float32 and losses[key].dim() == 0
        assert _rel(losses[key], golden["losses"][key]) <= 1e-4
        assert len(details.per_level[key]) == 3
        for ours, ref in zip(details.per_level[key], golden["losses_per_level"][key]):
            assert _rel(ours, ref) <= 1e-4
    assert _rel(total, golden["total_loss"]) <= 1e-4


def test_golden_assignment_end_to_end(golden, trained_step):
    _, _, details, _ = trained_step
    a = details.assign
    for i, ref in enumerate(golden["assign"]):
        pos = ref["gt_inds"] > 0
        assert torch.equal(a.gt_inds[i] + 1, ref["gt_inds"])  # ours 0-based / -1, mmdet 1-based / 0
        assert torch.equal(a.labels[i], ref["labels"])
        assert torch.equal(a.pos_mask[i], pos)
        assert torch.equal(a.metrics[i][pos], ref["max_overlaps"][pos])
        assert torch.equal(details.priors, ref["in_priors"])
    assert int(a.pos_mask.sum()) == 8 + 14


def test_golden_targets(golden, trained_step):
    _, _, details, _ = trained_step
    t = golden["targets"]
    assert torch.equal(details.labels, t["labels"])
    assert torch.equal(details.assign_metrics, t["assign_metrics"])
    assert torch.equal(details.bbox_targets, t["bbox_targets"])
    for i in range(2):
        assert torch.equal(details.assign.pos_mask[i].nonzero().squeeze(1), t["pos_inds"][i])
        assert torch.equal(details.assign.gt_inds[i][t["pos_inds"][i]], t["pos_assigned_gt_inds"][i])
    assert details.cls_avg_factor == pytest.approx(float(t["assign_metrics"].sum()), rel=1e-6)


def test_golden_grads(golden, trained_step):
    """Every listed gradient within rtol=1e-4. The head's gradients (everything the loss touches directly) are
    bit-identical; backbone gradients carry float rounding from the backward kernels of the stem (a reduction over
    2x320x320 positions): there one element of ``backbone.stem.0.conv.weight`` (value -0.049, |diff| 6.9e-6,
    1.4e-4 relative) fails a plain atol=1e-6, so atol is 1e-6 scaled by the tensor's largest |grad| (10 there).
    Each tensor also agrees to 1e-5 in relative L2 norm (measured: at most 2.1e-6)."""
    net, _, _, _ = trained_step
    params = dict(net.named_parameters())
    for name, ref in golden["grads"].items():
        ours = params[name].grad
        assert ours is not None, name
        atol = 1e-6 * max(1.0, float(ref.abs().max()))
        assert torch.allclose(ours, ref, rtol=1e-4, atol=atol), name
        assert float((ours - ref).norm() / ref.norm()) <= 1e-5, name
        if name.startswith("bbox_head."):
            assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6), name


def test_golden_grad_norms_of_all_params(golden, trained_step):
    net, _, _, _ = trained_step
    params = dict(net.named_parameters())
    assert set(params) == set(golden["grad_norms"])
    for name, ref in golden["grad_norms"].items():
        grad = params[name].grad
        ours = -1.0 if grad is None else grad.double().norm().item()
        assert ours == pytest.approx(ref, rel=1e-4), name


def test_golden_bn_running_stats(golden, trained_step):
    net, _, _, _ = trained_step
    modules = dict(net.named_modules())
    assert len(golden["bn_running_after"]) == 76
    for name, ref in golden["bn_running_after"].items():
        bn = modules[name]
        assert torch.equal(bn.running_mean, ref["running_mean"]), name
        assert torch.equal(bn.running_var, ref["running_var"]), name
        assert int(bn.num_batches_tracked) == ref["num_batches_tracked"], name


def test_golden_assigner_fed_with_reference_inputs(golden):
    """The assigner alone on mmdet's own inputs (priors, decoded boxes, train-mode logits)."""
    ref = golden["assign"]
    priors = ref[0]["in_priors"]
    logits = _flatten(golden["head_outs_train"]["cls_scores"], 80)
    boxes = torch.stack([r["in_decoded_bboxes"] for r in ref])
    gt_boxes, gt_labels, gt_valid = collate_targets(_targets(golden["gt_instances"]), 2, "cpu", 80)
    a = DynamicSoftLabelAssigner(topk=13).assign(priors, logits, boxes, gt_boxes, gt_labels, gt_valid)
    for i, r in enumerate(ref):
        pos = r["gt_inds"] > 0
        assert torch.equal(a.gt_inds[i] + 1, r["gt_inds"])
        assert torch.equal(a.labels[i], r["labels"])
        assert torch.equal(a.metrics[i][pos], r["max_overlaps"][pos])
        assert torch.equal(a.metrics[i][~pos], torch.zeros(int((~pos).sum())))


def test_golden_criterion_on_reference_head_outputs(golden):
    """loss_by_feat alone: the criterion on the stored train-mode head outputs gives the stored losses."""
    outs = golden["head_outs_train"]
    crit = RTMDetCriterion(80, STRIDES)
    cls = [c.clone().requires_grad_() for c in outs["cls_scores"]]
    reg = [b.clone().requires_grad_() for b in outs["bbox_preds"]]
    losses, details = crit(DetOutputs(cls, reg), _targets(golden["gt_instances"]), return_details=True)
    for key in ("loss_cls", "loss_bbox"):
        assert _rel(losses[key], golden["losses"][key]) <= 1e-6
        for ours, ref in zip(details.per_level[key], golden["losses_per_level"][key]):
            assert _rel(ours, ref) <= 1e-6
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert all(torch.isfinite(t.grad).all() for t in cls + reg)


# --------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------------------

def _bce(x, z):  # BCEWithLogits, written out
    return max(x, 0.0) - x * z + math.log1p(math.exp(-abs(x)))


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_quality_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([1, 2])  # prior 0 positive for class 1 with IoU 0.5; prior 1 background (label = C)
    scores = torch.tensor([0.5, 0.0])
    # prior 0: class 0 negative: BCE(0, 0) * sig(0)^2 = log 2 * 0.25; class 1: BCE(2, 0.5) * |0.5 - sig(2)|^2
    p0 = math.log(2) * 0.25 + (2 - 1 + math.log1p(math.exp(-2))) * (0.5 - _sig(2.0)) ** 2
    # prior 1: both negatives: BCE(-1, 0) * sig(-1)^2 + BCE(1, 0) * sig(1)^2
    p1 = math.log1p(math.exp(-1)) * _sig(-1.0) ** 2 + (1 + math.log1p(math.exp(-1))) * _sig(1.0) ** 2
    assert p0 == pytest.approx(0.336699, abs=1e-6) and p1 == pytest.approx(0.724526, abs=1e-6)
    out = quality_focal_loss(logits, labels, scores, beta=2.0)
    assert torch.allclose(out, torch.tensor([p0, p1]), rtol=1e-6, atol=1e-7)
    # labels -1 also mean background; beta enters as the exponent of the modulating factor
    out1 = quality_focal_loss(logits[:1], torch.tensor([-1]), torch.tensor([0.0]), beta=1.0)
    assert out1.item() == pytest.approx(_bce(0.0, 0) * 0.5 + _bce(2.0, 0) * _sig(2.0), rel=1e-6)


def test_giou_loss_by_hand():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 9.0, 7.0], [3.0, 3.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [5.0, 5.0, 9.0, 7.0], [0.0, 0.0, 2.0, 2.0]])
    # 1) overlap 1, union 4 + 4 - 1 = 7, enclosing 3x3 = 9: GIoU = 1/7 - (9 - 7)/9
    # 2) disjoint: IoU 0, union 2, enclosing 3x1: GIoU = -(3 - 2)/3
    # 3) identical: GIoU 1
    # 4) inverted pred (not clamped): area (-2)(-2) = 4, overlap 0 (clamped), union 4 + 4 = 8,
    #    enclosing [0, 0, 2, 2] = 4: GIoU = 0 - (4 - 8)/4 = 1
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 0.0, 0.0])
    assert torch.allclose(giou_loss(pred, target), expected, atol=1e-6)


def test_criterion_normalisation_by_hand():
    """loss_bbox = 2 * sum(w * (1 - GIoU)) / (1 + eps) / max(sum w, 1), loss_cls = sum(QFL) / (1 + eps) / same."""
    g = torch.Generator().manual_seed(3)
    sizes = [(10, 10), (5, 5), (3, 3)]
    cls = [torch.randn(2, 5, h, w, generator=g) - 3 for h, w in sizes]
    reg = [torch.rand(2, 4, h, w, generator=g) * 3 * s + s for (h, w), s in zip(sizes, STRIDES)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 75.0, 30.0]]), "labels": [1, 4]},
               {"boxes": torch.tensor([[0.0, 0.0, 80.0, 80.0]]), "labels": torch.tensor([2])}]
    losses, d = RTMDetCriterion(5, STRIDES)(DetOutputs(cls, reg), targets, return_details=True)
    pos = d.assign.pos_mask
    assert pos.any()
    boxes = grid_priors(sizes, STRIDES)[None, :, :2].repeat(2, 1, 2) + _flatten(reg, 4) * torch.tensor(
        [-1.0, -1.0, 1.0, 1.0])
    w = d.assign_metrics[pos]
    factor = max(float(w.sum()), 1.0)
    eps = torch.finfo(torch.float32).eps
    bbox = 2 * float((w * giou_loss(boxes[pos], d.bbox_targets[pos])).sum()) / (1 + eps) / factor
    qfl = float(quality_focal_loss(_flatten(cls, 5), d.labels, d.assign_metrics).sum()) / (1 + eps) / factor
    assert losses["loss_bbox"].item() == pytest.approx(bbox, rel=1e-5)
    assert losses["loss_cls"].item() == pytest.approx(qfl, rel=1e-5)
    # the two factors sum the same IoUs in different orders (all priors / positives only), as the reference does
    assert d.cls_avg_factor == pytest.approx(factor, rel=1e-6) and d.bbox_avg_factor == pytest.approx(factor, rel=1e-6)
    assert torch.equal(d.labels[~pos], torch.full_like(d.labels[~pos], 5))


def test_assigner_single_gt_by_reasoning():
    """One 32x32 gt, priors at stride 8. Candidates: the 3 priors strictly inside (0 and 32 are on the border).
    IoUs 0.25 / 1 / 0.25 -> dynamic k = int(1.5) = 1 -> the centre prior, whose prediction is the gt itself."""
    priors = torch.tensor([[8.0, 8, 8, 8], [16, 16, 8, 8], [24, 24, 8, 8], [40, 40, 8, 8], [0, 0, 8, 8]])
    boxes = torch.tensor([[[0.0, 0, 16, 16], [0, 0, 32, 32], [16, 16, 32, 32], [0, 0, 32, 32], [0, 0, 32, 32]]])
    logits = torch.zeros(1, 5, 3)
    a = DynamicSoftLabelAssigner().assign(priors, logits, boxes, torch.tensor([[[0.0, 0, 32, 32]]]),
                                          torch.tensor([[2]]))
    assert a.gt_inds.tolist() == [[-1, 0, -1, -1, -1]]
    assert a.labels.tolist() == [[-1, 2, -1, -1, -1]]
    assert a.metrics.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]


def test_assigner_conflict_and_gt_without_candidates():
    """Two gts both pick the only candidate (k = 1 each): it goes to the gt of lowest cost, A (IoU 1, centred),
    not B (IoU 576/1472, centre 1.41 strides away). A tiny gt C containing no prior still takes part: it picks
    its lowest-cost candidate too (costs are not masked by containment), here the same prior, and loses it."""
    priors = torch.tensor([[16.0, 16, 8, 8], [48, 48, 8, 8]])
    boxes = torch.tensor([[[0.0, 0, 32, 32], [40, 40, 44, 44]]])
    gts = torch.tensor([[[0.0, 0, 32, 32], [8, 8, 40, 40], [17, 17, 19, 19]]])
    a = DynamicSoftLabelAssigner().assign(priors, torch.zeros(1, 2, 4), boxes, gts, torch.tensor([[0, 1, 3]]))
    assert a.gt_inds.tolist() == [[0, -1]] and a.labels.tolist() == [[0, -1]]
    assert a.metrics[0, 0].item() == 1.0
    # Without A, B and C compete: C's IoU with the prediction is 4/1024, B's 576/1472, B is nearer in cost.
    a2 = DynamicSoftLabelAssigner().assign(priors, torch.zeros(1, 2, 4), boxes, gts[:, 1:], torch.tensor([[1, 3]]))
    assert a2.gt_inds.tolist() == [[0, -1]] and a2.labels.tolist() == [[1, -1]]
    assert a2.metrics[0, 0].item() == pytest.approx(576 / 1472, rel=1e-6)


def _random_head(batch, size, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    sizes = [(size // s, size // s) for s in STRIDES]
    cls = [torch.randn(batch, num_classes, h, w, generator=g) * 2 - 4 for h, w in sizes]
    reg = [(torch.rand(batch, 4, h, w, generator=g) * 4 + 0.2) * s for (h, w), s in zip(sizes, STRIDES)]
    return sizes, cls, reg


def _random_gts(n, size, num_classes, g):
    xy = torch.rand(n, 2, generator=g) * size * 0.9
    wh = torch.rand(n, 2, generator=g) * size * 0.5 + 2
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
    return {"boxes": boxes, "labels": torch.randint(0, num_classes, (n,), generator=g)}


def test_zero_gts_everywhere():
    sizes, cls, reg = _random_head(2, 64, 4, 0)
    cls = [c.requires_grad_() for c in cls]
    reg = [r.requires_grad_() for r in reg]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses, d = RTMDetCriterion(4, STRIDES)(DetOutputs(cls, reg), [empty, empty], return_details=True)
    assert losses["loss_bbox"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    assert not d.assign.pos_mask.any() and d.cls_avg_factor == 1.0
    (losses["loss_cls"] + losses["loss_bbox"]).backward()  # the box branch stays in the graph, with zero grads
    assert all(r.grad is not None and not r.grad.any() for r in reg)
    assert all(torch.isfinite(c.grad).all() for c in cls)
    # gts that contain no prior: no candidates, all background
    tiny = {"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([0])}
    losses, d = RTMDetCriterion(4, STRIDES)(DetOutputs(cls, reg), [tiny, empty], return_details=True)
    assert not d.assign.pos_mask.any() and losses["loss_bbox"].item() == 0.0


def test_batch_with_and_without_objects():
    """An image without objects is all background and does not change the other image's assignment."""
    sizes, cls, reg = _random_head(2, 128, 6, 1)
    g = torch.Generator().manual_seed(5)
    objects = _random_gts(7, 128, 6, g)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    crit = RTMDetCriterion(6, STRIDES)
    losses, d = crit(DetOutputs(cls, reg), [objects, empty], return_details=True)
    assert d.assign.pos_mask[0].any() and not d.assign.pos_mask[1].any()
    assert (d.labels[1] == 6).all() and (d.assign_metrics[1] == 0).all()
    _, alone = crit(DetOutputs([c[:1] for c in cls], [r[:1] for r in reg]), [objects], return_details=True)
    assert torch.equal(alone.assign.gt_inds[0], d.assign.gt_inds[0])
    assert torch.equal(alone.assign.metrics[0], d.assign.metrics[0])
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_bbox"].item() > 0


# --------------------------------------------------------------------------------------------------------------
# Exactness of the decomposition, brute-force reference, chunking and memory
# --------------------------------------------------------------------------------------------------------------

def _direct_class_cost(logits, labels, ious):
    """The reference's (candidates x gts x classes) class cost."""
    soft = F.one_hot(labels, logits.shape[-1]).float()[None] * ious[..., None]
    x = logits[:, None].expand(-1, len(labels), -1)
    return (F.binary_cross_entropy_with_logits(x, soft, reduction="none") * (soft - x.sigmoid()).abs().pow(2)).sum(-1)


def test_decomposed_class_cost_equals_direct():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 80, generator=g) * 3 - 2
    labels = torch.randint(0, 80, (30,), generator=g)
    ious = torch.rand(200, 30, generator=g)
    direct = _direct_class_cost(logits, labels, ious)
    ours = soft_class_cost(negative_class_cost(logits)[:, None], logits[:, labels], ious)
    diff = (ours - direct).abs()
    assert float(diff.max()) <= 1e-6 * float(direct.abs().max())  # float32 rounding of the 80-term sum only
    assert float((diff / direct.abs()).max()) <= 1e-6


def _reference_assign(priors, logits, boxes, gt_boxes, gt_labels, topk=13):
    """mmdet's algorithm for one image, written literally: dense class cost, one top-k per gt."""
    n = priors.shape[0]
    gt_inds = torch.full((n,), -1, dtype=torch.long)
    metrics = torch.zeros(n)
    if len(gt_boxes) == 0:
        return gt_inds, metrics
    p = priors[:, None, :2]
    deltas = torch.cat([p - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - p], -1)
    valid = (deltas.min(-1).values > 0).any(1)
    if not valid.any():
        return gt_inds, metrics
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
    vp = priors[valid]
    dist = (vp[:, None, :2] - centers[None]).pow(2).sum(-1).sqrt() / vp[:, 2, None]
    ious = box_overlaps(boxes[valid][:, None], gt_boxes[None])
    cost = _direct_class_cost(logits[valid], gt_labels, ious) - torch.log(ious + 1e-7) * 3.0 + torch.pow(10, dist - 3)
    ks = ious.topk(min(topk, len(vp)), dim=0).values.sum(0).int().clamp(min=1)
    match = torch.zeros_like(cost, dtype=torch.bool)
    for j in range(len(gt_boxes)):
        match[cost[:, j].topk(int(ks[j]), largest=False).indices, j] = True
    multi = match.sum(1) > 1
    match[multi] = F.one_hot(cost[multi].argmin(1), len(gt_boxes)).bool()
    fg = match.any(1)
    idx = valid.nonzero().squeeze(1)[fg]
    gt_inds[idx] = match[fg].int().argmax(1)
    metrics[idx] = ious[fg].gather(1, gt_inds[idx][:, None]).squeeze(1)
    return gt_inds, metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_assigner_matches_bruteforce_reference(seed):
    size, num_classes = 160, 20
    sizes, cls, reg = _random_head(3, size, num_classes, seed)
    priors = grid_priors(sizes, STRIDES, with_stride=True)
    logits = _flatten(cls, num_classes)
    boxes = priors[None, :, :2].repeat(1, 1, 2) + _flatten(reg, 4) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    g = torch.Generator().manual_seed(100 + seed)
    targets = [_random_gts(n, size, num_classes, g) for n in (12, 0, 30)]
    targets[0]["boxes"][0] = torch.tensor([9.0, 9.0, 15.0, 15.0])  # a gt containing no prior
    gt_boxes, gt_labels, gt_valid = collate_targets(targets, 3, "cpu", num_classes)
    results = [DynamicSoftLabelAssigner(max_pairs=m).assign(priors, logits, boxes, gt_boxes, gt_labels, gt_valid)
               for m in (1 << 22, 1)]  # one chunk, and one gt per chunk
    for a in results:
        for i, t in enumerate(targets):
            ref_inds, ref_metrics = _reference_assign(priors, logits[i], boxes[i], t["boxes"], t["labels"])
            assert torch.equal(a.gt_inds[i], ref_inds)
            assert torch.equal(a.metrics[i], ref_metrics)
            pos = ref_inds >= 0
            assert torch.equal(a.labels[i][pos], t["labels"][ref_inds[pos]])
    assert results[0].pos_mask[0].any() and not results[0].pos_mask[1].any()


def test_500_objects_in_one_640_image_memory_bounded(monkeypatch):
    """500 gts x 8400 priors: every pairwise tensor stays within max_pairs elements (the reference would build
    candidates x 500 x 80 floats, ~1.3 GB each). Peak memory and time are in benchmarks/bench_assigner.py."""
    sizes, cls, reg = _random_head(1, 640, 80, 7)
    priors = grid_priors(sizes, STRIDES, with_stride=True)
    logits = _flatten(cls, 80)
    boxes = priors[None, :, :2].repeat(1, 1, 2) + _flatten(reg, 4) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    g = torch.Generator().manual_seed(11)
    t = _random_gts(500, 640, 80, g)
    gt_boxes, gt_labels, gt_valid = collate_targets([t], 1, "cpu", 80)

    largest = []

    def recording_overlaps(a, b, eps=1e-6):
        out = box_overlaps(a, b, eps)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(assigner_module, "box_overlaps", recording_overlaps)
    assigner = DynamicSoftLabelAssigner(max_pairs=1 << 21)
    a = assigner.assign(priors, logits, boxes, gt_boxes, gt_labels, gt_valid)
    assert len(largest) >= 3  # several gt chunks, then the assigned pairs
    assert max(largest) <= assigner.max_pairs
    pos = a.pos_mask[0]
    assert int(pos.sum()) >= 500 // 4 and a.gt_inds.max() < 500
    matched = t["boxes"][a.gt_inds[0][pos]]
    assert torch.equal(a.metrics[0][pos], box_overlaps(boxes[0][pos], matched))


def test_loss_is_float32_under_autocast(shared, golden):
    net = RTMDetNet(get_config("rtmdet-tiny"))
    net.load_state_dict(_load(shared("reference/det_tiny/state_dict.pt")), strict=True)
    net.train()
    x = _load(shared("reference/common/noise_inputs.pt"))["loss_input"]
    targets = _targets(golden["gt_instances"])
    criterion = RTMDetCriterion(80, STRIDES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = criterion(net(x), targets)
    for key, value in losses.items():
        assert value.dtype == torch.float32
        assert _rel(value, golden["losses"][key]) <= 0.1, key  # bf16 forward, fp32 assignment and losses
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert torch.isfinite(net.bbox_head.rtm_reg[0].weight.grad).all()
    # Exactly fp32: under autocast the criterion gives what it gives outside on the same (bf16) head outputs.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cls, reg = net(x)
        inside = criterion(DetOutputs(cls, reg), targets)
    assert cls[0].dtype == torch.bfloat16
    outside = RTMDetCriterion(80, STRIDES)(DetOutputs([c.float() for c in cls], [r.float() for r in reg]), targets)
    for key in losses:
        assert inside[key].dtype == torch.float32 and torch.equal(inside[key], outside[key])
