"""MMCV's compiled CPU ``box_iou_rotated`` and ``nms_rotated`` timed for bench_rotated_ops.py (never imported by
rtmkit). Arguments: TOOLS_DIR BOXES_FILE THREADS. Serves one timed run per stdin line (JSON: milliseconds); the
results of the last run are saved next to the boxes file as keep.pt."""

import json
import os
import sys
import time

import torch


def main() -> None:
    tools, path, threads = sys.argv[1:4]
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol; the compiler's output goes to stderr
    sys.stdout.flush()
    os.dup2(2, 1)
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from reference import use_compiled_ops  # shared/tools/reference/reference.py

    use_compiled_ops()
    from mmcv.ops import box_iou_rotated, nms_rotated

    data = torch.load(path, weights_only=True)
    boxes, scores = data["boxes"], data["scores"]
    replies.write(json.dumps({"ready": True}) + "\n")
    for _ in sys.stdin:
        t0 = time.perf_counter()
        iou = box_iou_rotated(boxes, boxes)
        t1 = time.perf_counter()
        _, keep = nms_rotated(boxes, scores, 0.1)
        t2 = time.perf_counter()
        torch.save({"keep": keep, "iou": iou}, os.path.join(os.path.dirname(path), "keep.pt"))
        replies.write(json.dumps({"iou_ms": (t1 - t0) * 1e3, "nms_ms": (t2 - t1) * 1e3}) + "\n")


if __name__ == "__main__":
    main()
