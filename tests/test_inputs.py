"""Bad and odd input: image formats, numpy layouts, extreme sizes, mixed batches, corrupt files, sources, and a
malicious checkpoint given through the API. Uses the real RTMDet-nano person model (input 320)."""

from __future__ import annotations

import os
import pickle
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import read_video

from rtmkit import RTMDet
from rtmkit.checkpoint import CheckpointError
from rtmkit.data.images import ImageReadError, as_bgr_uint8, read_image
from rtmkit.data.preprocess import letterbox, resize_scale

NANO = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"
VAL = "data/coco_tiny/val2017"
CROWD = "000000064523.jpg"  # 444x640, 13 people at the deploy preset
CROWD2 = "000000376322.jpg"  # 640x478, portrait
CROWD3 = "000000005001.jpg"  # 480x640


@pytest.fixture(scope="module")
def nano(shared):
    return RTMDet("rtmdet-nano-person", weights=shared(NANO), device="cpu")


@pytest.fixture(scope="module")
def val(shared):
    return shared(VAL)


@pytest.fixture(scope="module")
def crowd(val):
    img = cv2.imread(str(val / CROWD))
    assert img is not None and img.shape == (444, 640, 3)
    return img


def assert_same(a, b, box_atol=1e-4, score_atol=1e-6):
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol, rtol=0)


# ---------------------------------------------------------------------------------------------- file formats


def test_grayscale_file_equals_replicated_gray_array(nano, crowd, tmp_path):
    gray = cv2.cvtColor(crowd, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.png"
    assert cv2.imwrite(str(path), gray)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2  # really a 1-channel file

    loaded = read_image(path)
    assert loaded.shape == (444, 640, 3) and loaded.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(loaded[:, :, c], gray)

    from_file = nano.predict(str(path), preset="eval")[0]
    from_array = nano.predict(np.repeat(gray[:, :, None], 3, axis=2), preset="eval")[0]
    assert len(from_file) > 5  # non-trivial comparison
    assert from_file.orig_shape == (444, 640)
    assert from_file.path == str(path) and from_array.path is None
    assert_same(from_file, from_array, box_atol=0, score_atol=0)


def test_rgba_png_equals_bgr_without_alpha(nano, crowd, tmp_path):
    bgra = cv2.cvtColor(crowd, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = np.random.default_rng(0).integers(0, 256, crowd.shape[:2], dtype=np.uint8)  # alpha is ignored
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), bgra)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[2] == 4

    np.testing.assert_array_equal(read_image(path), crowd)
    ref = nano.predict(crowd, preset="eval")[0]
    assert len(ref) > 5
    assert_same(nano.predict(str(path), preset="eval")[0], ref, box_atol=0, score_atol=0)


def test_16bit_png_equals_8bit(nano, crowd, tmp_path):
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), crowd.astype(np.uint16) * 257)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    np.testing.assert_array_equal(read_image(path), crowd)
    assert_same(nano.predict(str(path), preset="eval")[0], nano.predict(crowd, preset="eval")[0],
                box_atol=0, score_atol=0)
    # The reduction keeps the high byte (a low byte different from the high one tells it from truncation).
    other = tmp_path / "deep_low_bits.png"
    assert cv2.imwrite(str(other), (crowd.astype(np.uint16) << 8) | 0xC3)
    np.testing.assert_array_equal(read_image(other), crowd)


# ---------------------------------------------------------------------------------------------- numpy arrays


def test_array_layouts_normalised(crowd):
    gray = cv2.cvtColor(crowd, cv2.COLOR_BGR2GRAY)
    gray3 = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(as_bgr_uint8(gray), gray3)
    np.testing.assert_array_equal(as_bgr_uint8(gray[:, :, None]), gray3)
    bgra = np.dstack([crowd, np.full(crowd.shape[:2], 7, np.uint8)])
    out = as_bgr_uint8(bgra)
    np.testing.assert_array_equal(out, crowd)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(as_bgr_uint8(crowd.astype(np.uint16) * 257), crowd)
    np.testing.assert_array_equal(as_bgr_uint8((crowd.astype(np.uint16) << 8) | 0xC3), crowd)  # high byte kept
    mask = (gray > 128).astype(np.uint8) * 255
    np.testing.assert_array_equal(as_bgr_uint8(gray > 128), np.repeat(mask[:, :, None], 3, axis=2))
    # Non-contiguous views are accepted and copied.
    flipped = crowd[:, ::-1]
    np.testing.assert_array_equal(as_bgr_uint8(flipped), np.ascontiguousarray(flipped))


def test_arrays_predict_like_their_bgr_equivalent(nano, crowd):
    gray = cv2.cvtColor(crowd, cv2.COLOR_BGR2GRAY)
    ref_gray = nano.predict(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), preset="eval")[0]
    assert len(ref_gray) > 5
    assert_same(nano.predict(gray, preset="eval")[0], ref_gray, box_atol=0, score_atol=0)
    assert_same(nano.predict(gray[:, :, None], preset="eval")[0], ref_gray, box_atol=0, score_atol=0)

    ref = nano.predict(crowd, preset="eval")[0]
    bgra = np.dstack([crowd, np.zeros(crowd.shape[:2], np.uint8)])
    assert_same(nano.predict(bgra, preset="eval")[0], ref, box_atol=0, score_atol=0)
    assert_same(nano.predict(crowd.astype(np.uint16) * 257, preset="eval")[0], ref, box_atol=0, score_atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_unsupported_dtype_refused(nano, crowd, dtype):
    arr = crowd.astype(dtype) / (255 if dtype != np.int32 else 1)
    arr = arr.astype(dtype)
    with pytest.raises(ImageReadError, match=np.dtype(dtype).name):
        as_bgr_uint8(arr)
    with pytest.raises(ImageReadError, match=rf"array 0: unsupported dtype {np.dtype(dtype).name}"):
        nano.predict(arr)


@pytest.mark.parametrize("shape", [(10, 10, 2), (10, 10, 5), (2, 3, 10, 10, 3), (0, 10, 3), (10, 0)])
def test_bad_array_shapes_refused(shape):
    with pytest.raises(ImageReadError, match="shape"):
        as_bgr_uint8(np.zeros(shape, np.uint8))


def test_non_array_refused():
    with pytest.raises(ImageReadError, match="expected a numpy array, got list"):
        as_bgr_uint8([[1, 2], [3, 4]])


# ---------------------------------------------------------------------------------------------- extreme sizes


@pytest.mark.parametrize("h,w", [(3, 5), (3000, 4000), (10, 2000), (2000, 10), (1, 5000), (5000, 1)])
def test_extreme_sizes(nano, crowd, h, w):
    img = cv2.resize(crowd, (w, h), interpolation=cv2.INTER_LINEAR)
    size = nano.input_size

    nh, nw = resize_scale(h, w, size)
    assert 1 <= nh <= size and 1 <= nw <= size
    assert max(nh, nw) == size  # the long side fills the input
    canvas, (sw, sh) = letterbox(img, size)
    assert canvas.shape == (size, size, 3)
    assert sw == pytest.approx(nw / w) and sh == pytest.approx(nh / h)
    assert sw > 0 and sh > 0 and np.isfinite([sw, sh]).all()
    np.testing.assert_array_equal(canvas[nh:, :], 114)
    np.testing.assert_array_equal(canvas[:nh, nw:], 114)
    expected = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(canvas[:nh, :nw], expected)

    r = nano.predict(img, preset="eval")[0]
    assert r.orig_shape == (h, w)
    assert r.boxes.shape == (len(r), 4) and r.boxes.dtype == np.float32
    assert np.isfinite(r.boxes).all() and np.isfinite(r.scores).all()
    assert (r.boxes[:, 2] >= r.boxes[:, 0]).all() and (r.boxes[:, 3] >= r.boxes[:, 1]).all()
    # Default clip ("input"): inside the padded network input mapped back to image pixels.
    assert (r.boxes >= 0).all()
    assert (r.boxes[:, 0::2] <= size / sw + 1e-3).all() and (r.boxes[:, 1::2] <= size / sh + 1e-3).all()

    # The network sees exactly the same pixels as for the already-resized image, so the detections must be the
    # same up to the (anisotropic) scale factors: this checks the scale factors end to end.
    small = nano.predict(np.ascontiguousarray(expected), preset="eval")[0]
    assert len(r) == len(small)
    np.testing.assert_array_equal(r.labels, small.labels)
    np.testing.assert_allclose(r.scores, small.scores, atol=1e-6)
    np.testing.assert_allclose(r.boxes * np.float32([sw, sh, sw, sh]), small.boxes, rtol=1e-5, atol=1e-3)

    clipped = nano.predict(img, preset="eval", clip="image")[0]
    assert (clipped.boxes >= 0).all()
    assert (clipped.boxes[:, 0::2] <= w).all() and (clipped.boxes[:, 1::2] <= h).all()


def test_huge_image_finds_the_people(nano, crowd):
    huge = cv2.resize(crowd, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    r = nano.predict(huge)[0]
    assert r.orig_shape == (3000, 4000)
    ref = nano.predict(cv2.resize(crowd, (400, 300), interpolation=cv2.INTER_AREA))[0]
    assert len(r) >= 5 and abs(len(r) - len(ref)) <= 3
    # The best box matches the best box of a small copy, scaled by 10.
    np.testing.assert_allclose(r.boxes[0] / 10, ref.boxes[0], atol=3)


# ---------------------------------------------------------------------------------------------- batching


def test_mixed_size_batch_equals_one_by_one(nano, val):
    a = cv2.imread(str(val / CROWD))  # 444x640
    b = cv2.imread(str(val / CROWD2))  # 640x478
    c = cv2.resize(cv2.imread(str(val / CROWD3)), (250, 333))  # small, other aspect
    batched = nano.predict([a, b, c], batch=3, preset="eval")
    assert [r.orig_shape for r in batched] == [(444, 640), (640, 478), (333, 250)]
    for img, rb in zip([a, b, c], batched):
        rs = nano.predict(img, preset="eval")[0]
        assert len(rs) > 0
        assert_same(rb, rs, box_atol=1e-3, score_atol=1e-5)
    # batch=2 splits 3 images into a batch of 2 and a batch of 1: same results again.
    for r2, rb in zip(nano.predict([a, b, c], batch=2, preset="eval"), batched):
        assert_same(r2, rb, box_atol=1e-3, score_atol=1e-5)


def test_batch_must_be_positive(nano, crowd):
    with pytest.raises(ValueError, match="batch"):
        nano.predict(crowd, batch=0)


# ---------------------------------------------------------------------------------------------- empty result


def test_blank_image_gives_empty_result(nano, tmp_path):
    blank = np.full((240, 320, 3), 127, np.uint8)
    r = nano.predict(blank)[0]
    assert len(r) == 0
    assert r.boxes.shape == (0, 4) and r.scores.shape == (0,) and r.labels.shape == (0,)
    assert r.orig_shape == (240, 320)
    assert r.to_json() == "[]" and r.to_list() == []
    assert r.class_names == []
    plotted = r.plot()
    assert plotted.shape == blank.shape and plotted.dtype == np.uint8
    np.testing.assert_array_equal(plotted, blank)
    assert len(r.filter(0.5)) == 0
    out = r.save(tmp_path / "blank.jpg")
    assert cv2.imread(str(out)).shape == blank.shape


# ---------------------------------------------------------------------------------------------- corrupt files


def _write_bad(kind: str, folder, real_jpg: bytes, real_png: bytes):
    if kind == "random":
        path = folder / "random.jpg"
        data = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
        path.write_bytes(b"RND" + data)
    elif kind == "truncated_jpeg":
        path = folder / "cut.jpg"
        path.write_bytes(real_jpg[: len(real_jpg) // 2])
    elif kind == "empty":
        path = folder / "empty.jpg"
        path.write_bytes(b"")
    elif kind == "truncated_png":
        path = folder / "cut.png"
        path.write_bytes(real_png[: len(real_png) // 2])
    else:
        raise AssertionError(kind)
    return path


@pytest.fixture(scope="module")
def real_bytes(val, crowd):
    ok, png = cv2.imencode(".png", crowd)
    assert ok
    return (val / CROWD).read_bytes(), png.tobytes()


@pytest.mark.parametrize("kind,reason", [("random", "not a readable image"), ("truncated_jpeg", "truncated JPEG"),
                                         ("empty", "file is empty"), ("truncated_png", "not a readable image")])
def test_corrupt_files_raise_naming_the_file(nano, tmp_path, real_bytes, kind, reason):
    path = _write_bad(kind, tmp_path, *real_bytes)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    with pytest.raises(ImageReadError) as info:
        nano.predict(str(path))
    assert str(path) in str(info.value)


def test_missing_file(nano, tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match="file not found") as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError) as info2:
        nano.predict(str(path))
    assert str(path) in str(info2.value)
    with pytest.raises(FileNotFoundError) as info3:
        nano.predict([str(tmp_path / "other.jpg")])
    assert str(tmp_path / "other.jpg") in str(info3.value)


def test_folder_with_one_corrupt_image_raises_naming_it(nano, tmp_path, val, real_bytes):
    for i, name in enumerate([CROWD, CROWD2, CROWD3]):
        shutil.copy(val / name, tmp_path / f"{'acd'[i]}_{name}")
    bad = tmp_path / "b_broken.jpg"
    bad.write_bytes(real_bytes[0][:4000])
    (tmp_path / "notes.txt").write_text("not an image: ignored")

    with pytest.raises(ImageReadError) as info:
        nano.predict(tmp_path)
    msg = str(info.value)
    assert str(bad) in msg
    assert CROWD not in msg and CROWD2 not in msg and CROWD3 not in msg

    # Lazily: the image sorted before the broken one is yielded, then the error stops the stream.
    seen = []
    with pytest.raises(ImageReadError, match="b_broken.jpg"):
        for r in nano.stream(tmp_path):
            seen.append(os.path.basename(r.path))
    assert seen == [f"a_{CROWD}"]

    # on_error="skip": the broken file is named in a warning and in results.failures, the others are predicted
    # exactly as without it
    with pytest.warns(UserWarning, match=f"skipped: {re.escape(str(bad))}: truncated JPEG"):
        skipped = nano.predict(tmp_path, on_error="skip")
    assert [os.path.basename(r.path) for r in skipped] == [f"a_{CROWD}", f"c_{CROWD2}", f"d_{CROWD3}"]
    assert [(f.source, f.error.split(": ", 1)[1]) for f in skipped.failures] == [
        (str(bad), "truncated JPEG (no end-of-image marker); the file is incomplete")]

    # Without the broken file every image is returned, none skipped, in sorted order.
    bad.unlink()
    results = nano.predict(tmp_path)
    assert [os.path.basename(r.path) for r in results] == [f"a_{CROWD}", f"c_{CROWD2}", f"d_{CROWD3}"]
    assert results.failures == []
    for r, s in zip(results, skipped):
        np.testing.assert_array_equal(r.boxes, s.boxes)


def test_trailing_data_after_jpeg_end_marker_within_1k_ok(tmp_path, real_bytes, crowd):
    path = tmp_path / "padded.jpg"
    path.write_bytes(real_bytes[0] + b"\0" * 500)
    assert read_image(path).shape == crowd.shape


def test_long_trailer_after_jpeg_end_marker_is_not_truncation(tmp_path, real_bytes, crowd):
    path = tmp_path / "trailer.jpg"
    path.write_bytes(real_bytes[0] + b"\0" * 4096)
    assert cv2.imread(str(path)) is not None
    assert read_image(path).shape == crowd.shape


# ---------------------------------------------------------------------------------------------- sources


def test_folder_glob_list_and_stack_sources(nano, tmp_path, val):
    names = [CROWD, CROWD3]
    for n in names:
        shutil.copy(val / n, tmp_path / n)
    paths = [str(tmp_path / n) for n in sorted(names)]
    ref = [nano.predict(p)[0] for p in paths]
    assert all(len(r) > 0 for r in ref)

    for source in (tmp_path, str(tmp_path), str(tmp_path / "*.jpg"), paths, tuple(paths)):
        results = nano.predict(source)
        assert [r.path for r in results] == paths, source
        assert all(r.frame is None for r in results)
        for a, b in zip(results, ref):
            assert_same(a, b, box_atol=0, score_atol=0)

    a = cv2.imread(paths[0])
    b = cv2.resize(cv2.imread(paths[1]), (a.shape[1], a.shape[0]))
    stack = np.stack([a, b])
    assert stack.ndim == 4
    results = nano.predict(stack)
    assert len(results) == 2 and all(r.path is None for r in results)
    for img, r in zip([a, b], results):
        assert_same(r, nano.predict(img)[0], box_atol=0, score_atol=0)


def test_keep_images_false_drops_pixels(nano, crowd):
    r = nano.predict(crowd, keep_images=False)[0]
    assert r.orig_img is None and len(r) > 0
    with pytest.raises(ValueError, match="no image to draw on"):
        r.plot()
    assert r.plot(image=crowd).shape == crowd.shape


def test_video_gives_one_result_per_frame(nano, tmp_path, crowd):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (crowd.shape[1], crowd.shape[0]))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.roll(crowd, 8 * i, axis=1))
    writer.release()
    assert path.stat().st_size > 0

    results = nano.predict(str(path))
    assert [r.frame for r in results] == [0, 1, 2, 3, 4]
    assert all(r.path == str(path) and r.orig_shape == (444, 640) for r in results)
    assert sum(len(r) for r in results) > 0

    # Frames come out in order: each result equals the prediction on the frame decoded independently.
    frames = read_video(path)
    assert len(frames) == 5
    for f, r in zip(frames, results):
        assert_same(r, nano.predict(f)[0], box_atol=0, score_atol=0)
    # batch > 1 over a video: same results.
    for a, b in zip(nano.predict(str(path), batch=3), results):
        assert a.frame == b.frame
        assert_same(a, b, box_atol=1e-3, score_atol=1e-5)


def test_unreadable_video_raises(nano, tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"definitely not a video" * 100)
    with pytest.raises(ImageReadError, match="broken.mp4"):
        nano.predict(str(path))


def test_empty_folder_and_bad_sources(nano, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="folder has no images") as info:
        nano.predict(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(FileNotFoundError, match="glob matches no images"):
        nano.predict(str(tmp_path / "*.png"))
    with pytest.raises(TypeError, match="unsupported source of type int"):
        nano.predict(42)


def test_existing_file_with_glob_characters_in_name(nano, tmp_path, val):
    path = tmp_path / "img[1].jpg"
    shutil.copy(val / CROWD, path)
    results = nano.predict(str(path))
    assert len(results) == 1 and results[0].path == str(path)


# ---------------------------------------------------------------------------------------------- malicious checkpoint


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"backbone.stem.0.conv.weight": torch.zeros(1)}, "meta": _Payload(marker)}
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        RTMDet("rtmdet-nano-person", weights=path, device="cpu")
    msg = str(info.value)
    assert str(path) in msg and "system" in msg and "refusing to load" in msg
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        RTMDet(str(path), device="cpu")  # as an rtmkit checkpoint too
    assert not marker.exists()
