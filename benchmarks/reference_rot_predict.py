"""Times the official RTMDet-R (MMRotate 1.x on MMDetection 3.3) on one image, for bench_rot_predict.py.

Run by that benchmark with the Python of the reference environment (shared/tools/reference/setup.sh); never
imported by rtmkit. Arguments: TOOLS_DIR WEIGHTS IMAGE THREADS. mmcv's ``nms_rotated`` is its own compiled CPU
kernel (``use_compiled_ops()``). Serves timing requests like reference_predict.py: first line ``{"ready": true}``,
then per line read one JSON line with milliseconds: ``pre`` (test pipeline and data preprocessor), ``fwd``
(network) and ``post`` (the head's ``predict_by_feat``: decoding, rescale and rotated NMS), and the detection count.
"""

import json
import os
import sys
import time

import cv2
import torch


def main() -> None:
    tools, weights, image, threads = sys.argv[1:5]
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # stdout is the protocol: everything else goes to stderr
    sys.stdout.flush()
    os.dup2(2, 1)
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose
    from reference import build_reference, use_compiled_ops  # shared/tools/reference/reference.py

    use_compiled_ops()
    model, cfg = build_reference("rtmdet-r-tiny")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    pipe_cfg = get_test_pipeline_cfg(cfg)
    pipe_cfg[0].type = "mmdet.LoadImageFromNDArray"
    pipe_cfg = [t for t in pipe_cfg if "LoadAnnotations" not in t.type and "ConvertBoxType" not in t.type]
    pipeline = Compose(pipe_cfg)
    img = cv2.imread(image)
    replies.write(json.dumps({"ready": True}) + "\n")
    for _ in sys.stdin:
        t0 = time.perf_counter()
        data = pipeline(dict(img=img, img_id=0))
        data = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
        t1 = time.perf_counter()
        with torch.no_grad():
            feats = model.bbox_head(model.extract_feat(data["inputs"]))
            t2 = time.perf_counter()
            res = model.bbox_head.predict_by_feat(*feats, batch_img_metas=[s.metainfo for s in data["data_samples"]],
                                                  rescale=True)[0]
        t3 = time.perf_counter()
        replies.write(json.dumps({"pre": (t1 - t0) * 1e3, "fwd": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                                  "dets": len(res.scores)}) + "\n")


if __name__ == "__main__":
    main()
