"""Times the official implementation's training step for bench_train_step.py (never imported by rtmkit).

Run with the Python of the reference environment (shared/tools/reference/setup.sh). Builds the official model
with seeded random weights, saves them for rtmkit, prints a JSON "ready" line, then for every line read from
stdin times one ``model.train_step`` (data preprocessor, loss, backward, AdamW with the config's paramwise
settings) plus the EMA hook's ``update_parameters`` and prints a JSON line (milliseconds and the losses), so that
the benchmark can interleave reference and rtmkit steps.
"""

import json
import sys
import time

import torch


def main() -> None:
    tools, name, batch_file, weights_out, threads = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from mmdet.models.layers import ExpMomentumEMA
    from mmdet.structures import DetDataSample
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData
    from reference import build_reference  # shared/tools/reference/reference.py

    model, cfg = build_reference(name)
    torch.save(model.state_dict(), weights_out)
    data = torch.load(batch_file, weights_only=True)
    images = data["images"]
    size = tuple(images.shape[2:])
    samples = []
    masks = data.get("masks") or [None] * len(data["boxes"])
    for boxes, labels, bitmaps in zip(data["boxes"], data["labels"], masks):
        s = DetDataSample(metainfo={"img_shape": size, "pad_shape": size, "batch_input_shape": size,
                                    "scale_factor": (1.0, 1.0)})
        s.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        if bitmaps is not None:  # RTMDet-Ins: the masks as the Ins pipeline hands them over
            from mmdet.structures.mask import BitmapMasks

            s.gt_instances.masks = BitmapMasks(bitmaps.numpy().astype("uint8"), *size)
        samples.append(s)
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.optimizer.lr = 0.004 * images.shape[0] / 256
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=2000, update_buffers=True)
    model.train()
    print(json.dumps({"ready": True}), flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        log = model.train_step({"inputs": list(images), "data_samples": samples}, optim_wrapper)
        ema.update_parameters(model)
        ms = (time.perf_counter() - t0) * 1e3
        print(json.dumps({"step_ms": ms, **{k: float(v) for k, v in log.items() if k.startswith("loss_")}}),
              flush=True)


if __name__ == "__main__":
    main()
