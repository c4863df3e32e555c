"""The pictures rtmkit writes: captions on detections, results.png and pr_curve.png."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from rtmkit.plots import (
    class_color,
    draw_detections,
    format_ticks,
    label_positions,
    nice_ticks,
    plot_pr_curve,
    plot_results,
    pr_legend,
)

CHART_H, CHART_W = 240, 360  # one results.png chart


def _overlapping_pairs(rects: np.ndarray) -> int:
    r = np.asarray(rects)
    ix = np.minimum(r[:, None, 2], r[None, :, 2]) - np.maximum(r[:, None, 0], r[None, :, 0])
    iy = np.minimum(r[:, None, 3], r[None, :, 3]) - np.maximum(r[:, None, 1], r[None, :, 1])
    hit = (ix > 0) & (iy > 0)
    return int(np.triu(hit, 1).sum())


def _naive(boxes: np.ndarray, sizes: list[tuple[int, int]]) -> np.ndarray:
    """The old placement: above the box, inside its top when there is no room above; never moved sideways."""
    out = []
    for (x1, y1, _, _), (w, h) in zip(np.round(boxes).astype(int), sizes):
        top = y1 - h if y1 - h >= 0 else y1
        out.append((x1, top, x1 + w, top + h))
    return np.array(out)


def _inside(rects: np.ndarray, h: int, w: int) -> bool:
    r = np.asarray(rects)
    return bool((r[:, 0] >= 0).all() and (r[:, 1] >= 0).all() and (r[:, 2] <= w).all() and (r[:, 3] <= h).all())


def _crowd(h: int = 120, w: int = 200) -> np.ndarray:
    """Boxes along the top edge (no room above) and along the right edge (captions would pass it)."""
    top = [[12 * i, 2 + (i % 3), 12 * i + 30, 40] for i in range(12)]
    right = [[w - 25, 10 + 18 * i, w - 1, 28 + 18 * i] for i in range(5)]
    return np.array(top + right, np.float64)


# --------------------------------------------------------------------------------------------- label placement


def test_label_positions_single_box_goes_above_then_inside_then_clamped():
    sizes = [(40, 12)]
    assert label_positions(np.array([[50, 50, 90, 90]]), sizes, (120, 200)).tolist() == [[50, 38, 90, 50]]
    # No room above: inside the box top.
    assert label_positions(np.array([[50, 5, 90, 90]]), sizes, (120, 200)).tolist() == [[50, 5, 90, 17]]
    # Would pass the right edge: shifted left to end at the edge.
    assert label_positions(np.array([[180, 50, 199, 90]]), sizes, (120, 200)).tolist() == [[160, 38, 200, 50]]
    # Box partly outside the image: still inside.
    assert label_positions(np.array([[-30, -20, 250, 300]]), sizes, (120, 200)).tolist() == [[0, 0, 40, 12]]
    # A caption larger than the image is cut at the image size.
    assert label_positions(np.array([[0, 0, 10, 10]]), [(500, 300)], (120, 200)).tolist() == [[0, 0, 200, 120]]
    assert label_positions(np.zeros((0, 4)), [], (120, 200)).shape == (0, 4)


def test_label_positions_second_caption_avoids_the_first():
    boxes = np.array([[50, 50, 90, 90], [52, 52, 92, 92]], np.float64)
    rects = label_positions(boxes, [(30, 12), (30, 12)], (120, 200))
    assert rects[0].tolist() == [50, 38, 80, 50]  # first: its preferred spot
    assert _overlapping_pairs(rects) == 0
    assert rects[1].tolist() == [52, 52, 82, 64]  # second: inside its box top


def test_label_positions_crowded_scene_inside_and_fewer_overlaps():
    h, w = 120, 200
    boxes = _crowd(h, w)
    sizes = [(44, 14)] * len(boxes)
    naive = _naive(boxes, sizes)
    rects = label_positions(boxes, sizes, (h, w, 3))
    assert rects.shape == (len(boxes), 4) and np.issubdtype(rects.dtype, np.integer)
    assert not _inside(naive, h, w)  # the scene really does push captions out
    assert _inside(rects, h, w)
    assert ((rects[:, 2] - rects[:, 0]) == 44).all() and ((rects[:, 3] - rects[:, 1]) == 14).all()
    assert _overlapping_pairs(rects) < _overlapping_pairs(naive)


def test_label_positions_never_worse_than_first_choice_on_random_scenes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = 160, 240
        xy = rng.uniform([-10, -10], [w, h], (25, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 80, (25, 2))], 1)
        sizes = [(int(a), int(b)) for a, b in zip(rng.integers(20, 90, 25), rng.integers(8, 20, 25))]
        rects = label_positions(boxes, sizes, (h, w))
        assert _inside(rects, h, w)
        clamped = _naive(boxes, sizes)
        clamped[:, [0, 2]] -= np.clip(clamped[:, 2] - w, 0, None)[:, None] + np.clip(clamped[:, 0], None, 0)[:, None]
        clamped[:, [1, 3]] -= np.clip(clamped[:, 3] - h, 0, None)[:, None] + np.clip(clamped[:, 1], None, 0)[:, None]
        assert _overlapping_pairs(rects) <= _overlapping_pairs(clamped)


# ------------------------------------------------------------------------------------------------ draw_detections


def test_draw_detections_caption_at_right_edge_is_shifted_into_the_image():
    h, w = 100, 160
    img = np.zeros((h, w, 3), np.uint8)
    before = img.copy()
    out = draw_detections(img, np.array([[w - 12, 0, w - 1, 30]]), np.array([0.9]), np.array([0]),
                          {0: "a long class name"}, line_width=2)
    np.testing.assert_array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    cols = np.nonzero((out == class_color(0)).all(2).any(0))[0]
    # The caption fill reaches well left of the 12-pixel box (the old placement started at x1 = w - 12).
    assert cols.min() < w - 60 and cols.max() == w - 1
    rows = np.nonzero((out == class_color(0)).all(2).any(1))[0]
    assert rows.min() == 0  # no room above: inside the box top, starting at the top edge


def test_draw_detections_crowded_scene_draws_every_caption():
    h, w = 120, 200
    boxes = _crowd(h, w)
    labels = np.arange(len(boxes)) % 20
    img = np.full((h, w, 3), 90, np.uint8)
    out = draw_detections(img, boxes, np.linspace(0.9, 0.3, len(boxes)), labels, {})
    assert out.shape == img.shape
    # Earlier (higher-score) captions are not covered: every one of the first few class colours is visible in a
    # solid patch (a caption fill, not just a 1-pixel outline).
    for k in labels[:5]:
        mask = (out == class_color(k)).all(2).astype(np.uint8)
        assert cv2.erode(mask, np.ones((3, 3), np.uint8)).any(), f"caption of box {k} not visible"
    outline = draw_detections(img, boxes, np.ones(len(boxes)), labels, {}, show_labels=False, show_conf=False)
    assert (out != outline).any()


def test_draw_detections_no_captions_and_empty():
    img = np.full((50, 60, 3), 7, np.uint8)
    np.testing.assert_array_equal(draw_detections(img, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), {}), img)
    out = draw_detections(img, np.array([[10, 10, 40, 40]]), np.array([0.5]), np.array([3]), {}, 1, False, False)
    near_outline = np.zeros(img.shape[:2], np.uint8)
    cv2.rectangle(near_outline, (10, 10), (40, 40), 255, 5)
    changed = (out != img).any(axis=2)
    assert changed.any() and not (changed & (near_outline == 0)).any()  # no caption


def test_draw_detections_is_fast_with_many_boxes():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 600, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 100, (300, 2))], 1)
    img = np.zeros((640, 640, 3), np.uint8)
    t = time.perf_counter()
    draw_detections(img, boxes, rng.uniform(0, 1, 300), rng.integers(0, 80, 300), {})
    assert time.perf_counter() - t < 3.0


# ---------------------------------------------------------------------------------------------------- ticks


def test_nice_ticks_are_round_and_cover_the_range():
    t = nice_ticks(0.13, 0.87)
    assert t[0] <= 0.13 and t[-1] >= 0.87 and 3 <= len(t) <= 8
    steps = np.diff(t)
    np.testing.assert_allclose(steps, steps[0])
    assert any(math.isclose(steps[0], s) for s in (0.1, 0.2, 0.25, 0.5))
    for lo, hi in ((0.0, 0.0), (5.0, 5.0), (1e-4, 1e-4), (-3.0, -3.0), (float("nan"), 1.0)):
        t = nice_ticks(lo, hi)
        assert np.isfinite(t).all() and len(t) >= 2 and t[-1] > t[0]
        if math.isfinite(lo):
            assert t[0] <= lo <= t[-1]
    e = nice_ticks(1, 300, 6, integer=True)
    assert (e == np.round(e)).all() and e[0] <= 1 and e[-1] >= 300


def test_format_ticks():
    assert format_ticks([0.0, 0.5, 1.0]) == (["0.0", "0.5", "1.0"], "")
    assert format_ticks([0.0, 0.25, 0.5]) == (["0.00", "0.25", "0.50"], "")
    assert format_ticks([0.0, 10.0, 20.0]) == (["0", "10", "20"], "")
    assert format_ticks([0.0, 1e-4, 2e-4]) == (["0", "1", "2"], "x1e-4")
    assert format_ticks([0.0, 1e7, 2e7]) == (["0", "1", "2"], "x1e7")
    labels, _ = format_ticks(nice_ticks(-0.3, 0.3))
    assert "-0.0" not in labels and "0.0" in labels


# ------------------------------------------------------------------------------------------------ the charts


def _dark_runs(gray: np.ndarray, axis: int) -> np.ndarray:
    """Longest run of dark pixels in every row (axis=1) or column (axis=0)."""
    dark = (gray < 80).astype(np.int32)
    if axis == 0:
        dark = dark.T
    best = np.zeros(len(dark), np.int32)
    run = np.zeros(len(dark), np.int32)
    for j in range(dark.shape[1]):
        run = (run + 1) * dark[:, j]
        best = np.maximum(best, run)
    return best


def _assert_axes(tile: np.ndarray, frac: float = 0.6) -> tuple[int, int]:
    """An x axis (a long dark row) and a y axis (a long dark column meeting it at its left end); returns
    (row of the x axis, column of the y axis)."""
    gray = cv2.cvtColor(tile, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    rows = np.nonzero(_dark_runs(gray, 1) > frac * w)[0]
    cols = np.nonzero(_dark_runs(gray, 0) > 0.5 * h)[0]
    assert len(rows) and len(cols), "no axis lines"
    xrow, ycol = int(rows.max()), int(cols.min())
    assert (gray[xrow, ycol:ycol + int(frac * w)] < 80).all()  # they meet at the origin
    # Tick labels: ink below the x axis and left of the y axis.
    assert (gray[xrow + 5:xrow + 22, ycol:] < 200).sum() > 30
    assert (gray[:xrow, :ycol - 4] < 200).sum() > 30
    return xrow, ycol


def _history(n: int) -> list[dict]:
    rows = []
    for e in range(1, n + 1):
        row = {"epoch": e, "lr": 0.004 * (1 - e / (n + 1)), "loss_cls": 1.0 / e, "loss_bbox": 2.0 - 0.01 * e}
        if e % 2 == 0:
            row["AP"] = 0.05 * e
        rows.append(row)
    return rows


def test_plot_results_has_axes_on_every_chart(tmp_path):
    hist = _history(12)
    hist[3]["loss_cls"] = float("nan")
    plot_results(hist, tmp_path / "results.png")
    img = cv2.imread(str(tmp_path / "results.png"))
    assert img.shape == (CHART_H, 4 * CHART_W, 3)
    for i in range(4):
        tile = img[:, i * CHART_W:(i + 1) * CHART_W]
        xrow, ycol = _assert_axes(tile)
        blue = (tile[:xrow, ycol:, 0] > 150) & (tile[:xrow, ycol:, 2] < 80)
        assert blue.sum() > 50, f"chart {i}: no data line"


@pytest.mark.parametrize("history", [
    [{"epoch": 1, "lr": 0.01, "loss_cls": float("nan"), "AP": 0.0}],
    [{"epoch": e, "lr": 0.01, "loss": 0.5, "AP": None} for e in range(1, 4)],
    [{"epoch": 1, "lr": 0.01}, {"epoch": 2, "loss": float("inf")}, {"lr": 0.02, "note": "text"}],
])
def test_plot_results_single_epoch_nan_and_constant(tmp_path, history):
    path = tmp_path / "results.png"
    plot_results(history, path)
    img = cv2.imread(str(path))
    n = len({k for row in history for k in row if k != "epoch"})
    assert img.shape == (CHART_H, min(n, 4) * CHART_W, 3)
    for i in range(n):
        _assert_axes(img[:, i * CHART_W:(i + 1) * CHART_W])


def test_plot_results_empty_history_writes_nothing(tmp_path):
    plot_results([], tmp_path / "results.png")
    assert not (tmp_path / "results.png").exists()


def _precision(aps: list[float | None], r: int = 101) -> np.ndarray:
    """A COCOeval-shaped precision array [T, R, K, A, M] with flat curves of the given AP50 (None: no GT)."""
    p = np.zeros((10, r, len(aps), 4, 3))
    for k, ap in enumerate(aps):
        p[:, :, k] = -1 if ap is None else ap
    return p


def test_pr_legend_orders_by_ap_and_skips_classes_without_ground_truth():
    prec = _precision([0.2, None, 0.6, 0.4, 0.6])
    legend = pr_legend(prec, ["person", "car", "dog", "cat"], top=3)
    assert [k for k, _, _ in legend] == [-1, 2, 4, 3]
    assert [n for _, n, _ in legend] == ["all classes", "dog", "4", "cat"]  # a class past names: its index
    np.testing.assert_allclose([a for _, _, a in legend], [0.45, 0.6, 0.6, 0.4])
    assert pr_legend(_precision([None, None]), ["a", "b"]) == []


def test_plot_pr_curve_axes_and_legend(tmp_path):
    prec = _precision([0.412, None, 0.3])
    r = np.linspace(0, 1, 101)
    prec[0, :, 0, 0, -1] = np.clip(1.0 - r**4, 0, 1)
    path = tmp_path / "pr_curve.png"
    plot_pr_curve(prec, ["person", "car", "dog"], path)
    img = cv2.imread(str(path))
    assert img.shape == (480, 640, 3)
    xrow, ycol = _assert_axes(img, 0.5)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    plot_right = ycol + int(np.nonzero(gray[xrow, ycol:] < 80)[0].max())
    # The legend, right of the plot: swatches in the class colours, and text.
    legend = img[:, plot_right + 2:]
    for k in (0, 2):
        assert (legend == class_color(k)).all(2).sum() > 20, f"no legend swatch for class {k}"
    assert (cv2.cvtColor(legend, cv2.COLOR_BGR2GRAY) < 100).sum() > 200
    # y axis label ("precision", vertical) left of the tick labels.
    assert (gray[:, :20] < 150).sum() > 50
    plot_pr_curve(_precision([None]), ["x"], tmp_path / "none.png")
    assert cv2.imread(str(tmp_path / "none.png")).shape == (480, 640, 3)
