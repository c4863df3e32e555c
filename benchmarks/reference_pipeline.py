"""Times the official stage-1 training pipeline (MMDetection 3.3) for bench_pipeline.py (never imported by rtmkit).

Run with the Python of the reference environment (shared/tools/reference/setup.sh):
    reference_pipeline.py TOOLS_DIR COCO_ROOT MODEL NUM SEED
One process, no DataLoader: CocoDataset[i] runs LoadImageFromFile ... CachedMosaic ... CachedMixUp,
PackDetInputs (a uint8 CHW tensor; the reference normalises later, in its data preprocessor).
Prints one JSON line: images/s and ms per transform.
"""

import json
import sys
import time
from collections import defaultdict

import numpy as np
import torch


class Timed:
    def __init__(self, t, table):
        self.t, self.table = t, table

    def __call__(self, results):
        t0 = time.perf_counter()
        out = self.t(results)
        self.table[type(self.t).__name__] += time.perf_counter() - t0
        return out


def main() -> None:
    tools, root, model, num, seed = sys.argv[1:6]
    num, seed = int(num), int(seed)
    sys.path.insert(0, tools)
    import cv2
    from mmdet.registry import DATASETS
    from reference import reference_config  # shared/tools/reference/reference.py

    cv2.setNumThreads(1)  # one thread each for OpenCV and torch, as bench_pipeline.py's single process
    torch.set_num_threads(1)
    cfg = reference_config(model)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = root.rstrip("/") + "/"
    ds_cfg.ann_file = "annotations/instances_train2017.json"
    ds_cfg.data_prefix = {"img": "train2017/"}
    ds = DATASETS.build(ds_cfg)
    table = defaultdict(float)
    ds.pipeline.transforms = [Timed(t, table) for t in ds.pipeline.transforms]
    order = np.random.default_rng(seed).integers(0, len(ds), num + 10)
    for i in order[:10]:  # fill the caches a little, as bench_pipeline.py does
        ds[int(i)]
    table.clear()
    t0 = time.perf_counter()
    for i in order[10:]:
        ds[int(i)]
    elapsed = time.perf_counter() - t0
    print(json.dumps({"images_per_s": num / elapsed, "num_images": len(ds),
                      "per_transform_ms": {k: v / num * 1000 for k, v in table.items()}}))


if __name__ == "__main__":
    main()
