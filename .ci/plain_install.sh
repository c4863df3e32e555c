#!/usr/bin/env bash
# A plain `pip install rtmkit` (core dependencies only, no extras) in a fresh venv must run every verb.
set -euo pipefail
root=$(pwd)
shared=${RTMKIT_SHARED:-$root/../shared}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q "$root"
cd "$work"
rt="$work/venv/bin/rtmkit"
"$rt" --version
"$rt" models > /dev/null
"$rt" predict --model rtmdet-nano --no-save --device cpu
# no arguments: the demo model shipped as package data must be in the installed package and find the shapes
"$rt" predict --device cpu --project "$work/predict" > "$work/demo.txt"
grep -q "^found: .*triangle" "$work/demo.txt" || { cat "$work/demo.txt"; echo "demo predict found nothing"; exit 1; }
if [ -d "$shared/weights" ]; then
  nano="$shared/weights/rtmdet_nano_person/rtmdet_nano_person.pth"
  "$rt" val --model rtmdet-nano-person --weights "$nano" --data "$shared/data/coco_tiny/annotations/instances_val2017.json" \
    --device cpu > "$work/val.txt"
  grep -q "^ Average Precision  (AP) @\[ IoU=0.50:0.95 | area=   all | maxDets=100 \] = 0.39" "$work/val.txt" \
    || { cat "$work/val.txt"; echo "val: not the nano person model's AP on coco_tiny"; exit 1; }
  "$rt" check --data "$shared/data/balloon/val.json" > /dev/null
  "$rt" train --model rtmdet-nano-person --weights "$nano" --data "$shared/data/balloon/val.json" \
    --val "$shared/data/balloon/val.json" --epochs 1 --batch 4 --imgsz 160 --workers 0 --freeze-bn --device cpu \
    --project "$work/runs" > /dev/null
  "$rt" val --model "$work/runs/exp/weights/best.pt" --data "$shared/data/balloon/val.json" --device cpu > /dev/null
fi
# optional runtimes are extras: their absence must give an install hint, not a bare ModuleNotFoundError
if "$rt" export --model rtmdet-nano --file "$work/x.onnx" 2> "$work/err.txt"; then
  echo "export without onnx installed should fail with an install hint"; exit 1
fi
grep -q "pip install" "$work/err.txt" || { cat "$work/err.txt"; echo "no install hint"; exit 1; }
echo "plain install: every verb ran"
