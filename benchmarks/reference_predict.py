"""Times the official implementation (MMDetection 3.3) on the same image and weights as bench_predict_cpu.py.

Run by that benchmark with the Python of the reference environment built by shared/tools/reference/setup.sh;
never imported by rtmkit. Arguments: TOOLS_DIR WEIGHTS IMAGE THREADS [NMS]. NMS is "compiled" (default: mmcv's
own C++ CPU kernels, built and routed to by ``use_compiled_ops()`` of shared/tools/reference/reference.py, which
is what an MMDetection user runs) or "stand-in" (the environment's slow pure-torch NMS, as earlier versions of
this benchmark used). It serves timing requests so that the benchmark can interleave them with its own runs
(same machine state for both sides): its first line is ``{"ready": true, "nms": ...}``, then for each line read
from stdin ("fwd" = preprocess + forward, "post" = also the eval-preset post-processing) it prints one JSON line
with the milliseconds of that run.
"""

import json
import os
import sys
import time

import cv2
import torch

NMS_CHOICES = ("compiled", "stand-in")


def main() -> None:
    tools, weights, image, threads = sys.argv[1:5]
    nms = sys.argv[5] if len(sys.argv) > 5 else "compiled"
    if nms not in NMS_CHOICES:
        raise SystemExit(f"NMS must be one of {NMS_CHOICES}, got {nms!r}")
    # The replies go to a private copy of stdout; anything else written to stdout (the compiler's output on the
    # first build of the kernels, library messages) goes to stderr so it cannot break the protocol.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose
    from reference import build_reference, use_compiled_ops  # shared/tools/reference/reference.py

    if nms == "compiled":
        import importlib

        ops = use_compiled_ops()  # first call compiles the kernels (about a minute), then cached
        if importlib.import_module("mmcv.ops.nms").ext_module.nms is not ops.nms:
            raise SystemExit("use_compiled_ops() did not route mmcv.ops.nms to the compiled kernel")
    model, cfg = build_reference("rtmdet-tiny")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    pipe_cfg = get_test_pipeline_cfg(cfg)
    pipe_cfg[0].type = "mmdet.LoadImageFromNDArray"
    pipeline = Compose(pipe_cfg)
    img = cv2.imread(image)
    replies.write(json.dumps({"ready": True, "nms": nms}) + "\n")
    for line in sys.stdin:
        t0 = time.perf_counter()
        data = pipeline(dict(img=img, img_id=0))
        data = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
        t1 = time.perf_counter()
        out = {"pre": (t1 - t0) * 1e3}
        with torch.no_grad():
            feats = model.bbox_head(model.extract_feat(data["inputs"]))
            t2 = time.perf_counter()
            out["fwd"] = (t2 - t1) * 1e3
            if line.strip() == "post":
                res = model.bbox_head.predict_by_feat(*feats, batch_img_metas=[s.metainfo for s in
                                                                                data["data_samples"]], rescale=True)
                out["post_eval"] = (time.perf_counter() - t2) * 1e3
                out["dets"] = len(res[0].scores)
        replies.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
