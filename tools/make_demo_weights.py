"""Train the small model ``rtmkit predict`` shows without arguments and write it into the package.

    python tools/make_demo_weights.py            # ~12 min on 2 CPU cores

The recipe is ``rtmkit train``'s offline demo (``DEMO_DATA``, ``DEMO_TRAIN``) with more images and epochs. The
result, ``rtmkit/demo/rtmdet_nano_shapes.pt``, is an ordinary rtmkit checkpoint (config, class names, SHA-256 of
its tensors) stored in float16 to keep the package small; loading casts it back to float32.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rtmkit.assets import DEMO_WEIGHTS
from rtmkit.checkpoint import load_checkpoint_file, save_checkpoint
from rtmkit.data.synthetic import DEMO_DATA, make_shapes_dataset
from rtmkit.engine.args import DEMO_TRAIN, TrainArgs
from rtmkit.engine.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--num-train", type=int, default=600)
    ap.add_argument("--out", default=str(DEMO_WEIGHTS))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtmkit-demo-"))
    try:
        data = make_shapes_dataset(work / "shapes", **{**DEMO_DATA, "num_train": args.num_train, "seed": 1})
        train = {**DEMO_TRAIN, "epochs": args.epochs, "stage2_epochs": args.epochs}
        result = Trainer(TrainArgs.from_kwargs(**train, data=str(data["train_json"]), val=str(data["val_json"]),
                                               project=str(work / "runs"), name="demo")).fit()
        best = load_checkpoint_file(Path(result["save_dir"]) / "weights" / "best.pt")
        half = {k: v.half() if v.is_floating_point() else v for k, v in best["state_dict"].items()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(args.out, half, class_names=best["meta"]["dataset_meta"]["classes"],
                        config=best["rtmkit"]["config"])
        print(f"AP {result['metrics']['AP']:.4f} on {DEMO_DATA['num_val']} validation images; wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
