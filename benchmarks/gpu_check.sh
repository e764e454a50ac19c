#!/usr/bin/env bash
# GPU check (issue 19, part 6): one prepared run on a CUDA machine, under 8 minutes in all.
#   bash benchmarks/gpu_check.sh [OUT_DIR]       (OUT_DIR default: $OUT or ./gpu_check_out)
# 1. CUDA tests: streamed stitching on CUDA, bf16 autocast prediction, out-of-memory retry, the runtime choice;
# 2. one-process NCCL DDP pretraining under torchrun --nproc_per_node 1;
# 3. step times: ResEnc-L mae3d 160^3 batch 2, VoCo-B (SwinUNETR-B) fine-tuning 96^3, 3DINO ViT-L dino3d 112^3;
# 4. medssl predict of a 512x512x300 volume (14 classes, default network and ROI), time and peak RSS.
# Every section has its own timeout, so one that hangs cannot take the others' time; results go to
# OUT_DIR/gpu_check.json and OUT_DIR/*.log. Without a CUDA GPU it stops at once with one line.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MEDSSL_HOME="$OUT_DIR/home"
PY="${PYTHON:-python3}"
START=$(date +%s)

# A CUDA torch: the one installed, else a venv with the PyPI build of the pinned version (CUDA on Linux).
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if ! command -v nvidia-smi >/dev/null; then echo "error: no CUDA GPU here (nvidia-smi missing)"; exit 2; fi
  "$PY" -m venv "$OUT_DIR/venv" && PY="$OUT_DIR/venv/bin/python"
  timeout 240 "$PY" -m pip install -q "torch==2.13.0" monai SimpleITK numpy safetensors huggingface-hub tqdm \
    PyYAML einops pillow pytest nibabel psutil >"$OUT_DIR/install.log" 2>&1 \
    || { echo "error: installing a CUDA torch failed (see $OUT_DIR/install.log)"; exit 2; }
  "$PY" -m pip install -q --no-deps "dynamic-network-architectures==0.4.4" >>"$OUT_DIR/install.log" 2>&1
fi
"$PY" -c "import torch; assert torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0))" \
  | tee "$OUT_DIR/gpu.txt" || { echo "error: torch sees no CUDA GPU"; exit 2; }

section() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "{\"section\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >>"$OUT_DIR/sections.jsonl"
  echo "[$name] rc=$rc in $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - START )) s)"
}

# 1. CUDA tests (the skipif-guarded ones run here; the OOM retry and runtime-choice tests run anywhere).
section cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider Testing/test_streaming.py Testing/test_runtimes.py \
  "Testing/test_resources.py::test_cuda_oom_in_prediction_retries_smaller_batch_then_cpu" -k "cuda or oom or auto"

# 2. NCCL DDP under torchrun with one process (pretraining a tiny network for 3 steps on a real-like volume).
"$PY" - "$OUT_DIR/ddp_scan.nii.gz" <<'PYEOF'
import sys, numpy as np, SimpleITK as sitk
img = sitk.GetImageFromArray((np.random.default_rng(0).normal(size=(64, 64, 64)) * 100).astype(np.float32))
img.SetSpacing((1.5, 1.5, 1.5)); sitk.WriteImage(img, sys.argv[1])
PYEOF
section ddp_nccl 90 "$PY" -m torch.distributed.run --nproc_per_node 1 --standalone -m medssl pretrain --method mae3d \
  --images "$OUT_DIR/ddp_scan.nii.gz" --out "$OUT_DIR/ddp_run" --backbone resenc:test --preset cpu --steps 3 \
  --device cuda --progress none --overwrite

# 3. Step times of the published recipes (forward + backward + optimiser step, bf16 autocast).
section step_times 180 "$PY" benchmarks/gpu_step_times.py --out "$OUT_DIR/step_times.json"  # checked on a CPU by Testing/test_gpu_check.py

# 4. medssl predict of a 512x512x300 volume on the GPU (default runtime: torch bf16 autocast).
MEDSSL_BENCH_DEVICE=cuda section predict_large 150 "$PY" benchmarks/predict_vs_monai.py --skip-speed --skip-bare-large --large-roi 128

"$PY" - "$OUT_DIR" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {"gpu": (out / "gpu.txt").read_text().strip(),
           "sections": [json.loads(l) for l in (out / "sections.jsonl").read_text().splitlines()]}
if (out / "step_times.json").exists():
    summary["step_times"] = json.loads((out / "step_times.json").read_text())
tail = (out / "predict_large.log").read_text().strip().splitlines()
summary["predict_large"] = [l for l in tail if l.startswith("  medssl") or l.startswith("{")]
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PYEOF
echo "gpu_check finished in $(( $(date +%s) - START )) s"
