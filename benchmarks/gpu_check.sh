#!/usr/bin/env bash
# GPU check (issue 19, part 6): one prepared run on a CUDA machine, under 8 minutes in all.
#   bash benchmarks/gpu_check.sh [OUT_DIR]       (OUT_DIR default: $OUT or ./gpu_check_out)
# 1. CUDA tests: streamed stitching on CUDA, bf16 autocast prediction, out-of-memory retry, the runtime choice;
# 2. one-process NCCL DDP pretraining under torchrun --nproc_per_node 1;
# 3. step times: ResEnc-L mae3d 160^3 batch 2, VoCo-B (SwinUNETR-B) fine-tuning 96^3, 3DINO ViT-L dino3d 112^3;
# 4. medssl predict of a 512x512x300 volume (14 classes, default network and ROI), time and peak RSS.
# Every section has its own timeout, so one that hangs cannot take the others' time. Work files stay in a scratch
# folder; OUT_DIR receives two files only (the lent machine returns at most 8): gpu_check.json and gpu_check_logs.txt.
# Without a CUDA GPU it stops at once with one line.
#
# The lent machine (python3 3.12 with a CUDA torch, numpy, safetensors, huggingface-hub, PyYAML, einops, tqdm,
# pillow, psutil, pytest) reaches no package index: what it lacks (MONAI, SimpleITK, dynamic-network-architectures)
# travels as wheels. Here: bash benchmarks/gpu_wheels.sh (fills .whl/, ignored by git); then the device run with
# carry [".whl"] and the command "bash benchmarks/gpu_check.sh".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
if ! command -v nvidia-smi >/dev/null; then echo "error: no CUDA GPU here (nvidia-smi missing)"; exit 2; fi
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/medssl_gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT  # what matters is copied into OUT_DIR at the end
WHEELS="${MEDSSL_GPU_WHEELS:-.whl}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MEDSSL_HOME="$WORK/home"
PY="${PYTHON:-python3}"
START=$(date +%s)

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then  # the carried wheels, into a private folder ahead of the path
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
    >"$WORK/install.log" 2>&1 || { echo "error: installing the carried wheels failed:"; tail -3 "$WORK/install.log"; exit 2; }
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi
MISSING=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in ('torch', 'monai', 'SimpleITK', \
'dynamic_network_architectures', 'safetensors', 'huggingface_hub', 'yaml', 'einops', 'tqdm', 'PIL', 'pytest') \
if u.find_spec(m) is None))")
if [ -n "$MISSING" ]; then
  echo "error: Python packages missing: $MISSING; run benchmarks/gpu_wheels.sh where pip works and carry .whl"; exit 2
fi
"$PY" -c "import torch; assert torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0), '- torch', \
torch.__version__)" 2>/dev/null | tee "$WORK/gpu.txt" || { echo "error: torch sees no CUDA GPU"; exit 2; }

section() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "{\"section\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >>"$WORK/sections.jsonl"
  echo "[$name] rc=$rc in $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - START )) s)"
}

# 1. CUDA tests (the skipif-guarded ones run here; the OOM retry and runtime-choice tests run anywhere).
section cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider Testing/test_streaming.py Testing/test_runtimes.py \
  "Testing/test_resources.py::test_cuda_oom_in_prediction_retries_smaller_batch_then_cpu" -k "cuda or oom or auto"

# 2. NCCL DDP under torchrun with one process (pretraining a tiny network for 3 steps on a real-like volume).
"$PY" - "$WORK/ddp_scan.nii.gz" <<'PYEOF'
import sys, numpy as np, SimpleITK as sitk
img = sitk.GetImageFromArray((np.random.default_rng(0).normal(size=(64, 64, 64)) * 100).astype(np.float32))
img.SetSpacing((1.5, 1.5, 1.5)); sitk.WriteImage(img, sys.argv[1])
PYEOF
section ddp_nccl 90 "$PY" -m torch.distributed.run --nproc_per_node 1 --standalone -m medssl pretrain --method mae3d \
  --images "$WORK/ddp_scan.nii.gz" --out "$WORK/ddp_run" --backbone resenc:test --preset cpu --steps 3 \
  --device cuda --progress none --overwrite

# 3. Step times of the published recipes (forward + backward + optimiser step, bf16 autocast).
section step_times 180 "$PY" benchmarks/gpu_step_times.py --out "$WORK/step_times.json"  # checked on a CPU by Testing/test_gpu_check.py

# 4. medssl predict of a 512x512x300 volume on the GPU (default runtime: torch bf16 autocast).
MEDSSL_BENCH_DEVICE=cuda section predict_large 150 "$PY" benchmarks/predict_vs_monai.py --skip-speed --skip-bare-large --large-roi 128

"$PY" - "$WORK" "$OUT_DIR" <<'PYEOF'
import json, pathlib, sys
out, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
summary = {"gpu": (out / "gpu.txt").read_text().strip(),
           "sections": [json.loads(l) for l in (out / "sections.jsonl").read_text().splitlines()]}
if (out / "step_times.json").exists():
    summary["step_times"] = json.loads((out / "step_times.json").read_text())
tail = (out / "predict_large.log").read_text().strip().splitlines()
summary["predict_large"] = [l for l in tail if l.startswith("  medssl") or l.startswith("{")]
(dest / "gpu_check.json").write_text(json.dumps(summary, indent=1))
logs = [f"===== {p.name}\n{p.read_text(errors='replace')}" for p in sorted(out.glob("*.log"))]
(dest / "gpu_check_logs.txt").write_text("\n".join(logs))
print(json.dumps(summary, indent=1))
PYEOF
echo "gpu_check finished in $(( $(date +%s) - START )) s"
