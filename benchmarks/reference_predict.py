"""Times the official implementation (MMDetection 3.3) on the same image and weights as bench_predict_cpu.py.

Run by that benchmark with the Python of the reference environment built by shared/tools/reference/setup.sh;
never imported by rtmkit. Prints one JSON line: median milliseconds of preprocess, forward, postprocess (eval).
"""

import json
import statistics
import sys
import time

import cv2
import torch


def main() -> None:
    tools, weights, image, runs, warmup, threads = sys.argv[1:7]
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose
    from reference import build_reference  # shared/tools/reference/reference.py

    model, cfg = build_reference("rtmdet-tiny")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    pipe_cfg = get_test_pipeline_cfg(cfg)
    pipe_cfg[0].type = "mmdet.LoadImageFromNDArray"
    pipeline = Compose(pipe_cfg)
    img = cv2.imread(image)
    pre, fwd, post = [], [], []
    for i in range(int(warmup) + int(runs)):
        t0 = time.perf_counter()
        data = pipeline(dict(img=img, img_id=0))
        data = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}, False)
        t1 = time.perf_counter()
        with torch.no_grad():
            outs = model.bbox_head(model.extract_feat(data["inputs"]))
            t2 = time.perf_counter()
            res = model.bbox_head.predict_by_feat(*outs, batch_img_metas=[s.metainfo for s in data["data_samples"]],
                                                  rescale=True)
        t3 = time.perf_counter()
        if i >= int(warmup):
            pre.append(t1 - t0)
            fwd.append(t2 - t1)
            post.append(t3 - t2)
    med = statistics.median
    print(json.dumps({"pre": med(pre) * 1e3, "fwd": med(fwd) * 1e3, "post_eval": med(post) * 1e3,
                      "dets": len(res[0].scores)}))


if __name__ == "__main__":
    main()
