#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on the lent GPU machine, downloaded here into .whl/ (ignored by git).
# That machine has python3 3.12 with a CUDA torch, numpy, safetensors, huggingface-hub, PyYAML, einops, tqdm,
# pillow, psutil and pytest (the device tool's KINDS.md), reaches no package index, and lacks these. They travel
# with the working tree (carry [".whl"]; about 56 MB, with the ~11 MB tree inside the 64 MiB a call may carry).
#   bash benchmarks/gpu_wheels.sh      then: device run, carry [".whl"], command "bash benchmarks/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
for spec in "monai==1.6.1" "SimpleITK==2.5.7" "dynamic-network-architectures==0.4.4" "pytest-timeout==2.4.0"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec"
done
du -ch .whl/*.whl | tail -1
