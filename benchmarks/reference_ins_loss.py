"""The reference's RTMDet-Ins losses on bench_ins_memory.py's saved inputs, in a fresh process (never imported by
rtmkit). Arguments: TOOLS_DIR INPUTS THREADS. Prints one JSON line: peak extra memory, time and the losses."""

import json
import sys
import time

import torch


def proc_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main():
    tools, path, threads = sys.argv[1:4]
    torch.set_num_threads(int(threads))
    sys.path.insert(0, tools)
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    from reference import build_reference, use_compiled_ops  # shared/tools/reference/reference.py

    use_compiled_ops()
    model, _ = build_reference("rtmdet-ins-tiny")
    head = model.bbox_head
    data = torch.load(path, weights_only=True)

    def run(d):
        size = d["mask_feat"].shape[-1] * 8
        gt = InstanceData(bboxes=d["boxes"], labels=d["labels"],
                          masks=BitmapMasks(d["masks"].numpy().astype("uint8"), size, size))
        meta = {"img_shape": (size, size), "pad_shape": (size, size), "batch_input_shape": (size, size)}
        cls = [t.clone().requires_grad_() for t in d["cls"]]
        reg = [t.clone().requires_grad_() for t in d["reg"]]
        ker = [t.clone().requires_grad_() for t in d["kernels"]]
        feat = d["mask_feat"].clone().requires_grad_()
        losses = head.loss_by_feat(cls, reg, ker, feat, [gt], [meta])
        # per-level lists summed over levels, as the reference's logger reports them
        losses = {k: sum(v) if isinstance(v, (list, tuple)) else v for k, v in losses.items() if k.startswith("loss_")}
        sum(losses.values()).backward()
        return {k: float(v) for k, v in losses.items()}

    g = torch.Generator().manual_seed(1)
    small = {"cls": [torch.randn(1, 80, 64 // s, 64 // s, generator=g) for s in (8, 16, 32)],
             "reg": [torch.rand(1, 4, 64 // s, 64 // s, generator=g) * s for s in (8, 16, 32)],
             "kernels": [torch.randn(1, 169, 64 // s, 64 // s, generator=g) * 0.3 for s in (8, 16, 32)],
             "mask_feat": torch.randn(1, 8, 8, 8, generator=g), "boxes": torch.tensor([[4.0, 4, 40, 40]]),
             "labels": torch.tensor([1]), "masks": torch.zeros(1, 64, 64, dtype=torch.bool)}
    small["masks"][0, 8:36, 8:36] = True
    run(small)
    base = proc_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t0 = time.perf_counter()
    losses = run(data)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"peak_extra_mib": (proc_kib("VmHWM") - base) / 1024, "time_s": elapsed, **losses}))


if __name__ == "__main__":
    main()
