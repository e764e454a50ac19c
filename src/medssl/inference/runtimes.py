"""Which engine runs the window network, at which precision: ``--runtime auto|torch|openvino``.

``auto`` measures nothing at run time; it picks from what the machine has, following the measurements in
the README ("Inference runtimes"; resenc:tiny on Colin27, 2 cores with AMX: torch float32 1.36 s,
torch bf16 0.41 s, OpenVINO float32 0.43 s, OpenVINO bf16 0.15 s of sliding window):

- a CUDA device: torch with autocast, bfloat16 where the GPU supports it, else float16;
- an x86 CPU with the ``openvino`` package: OpenVINO, bf16 where the CPU has AMX or AVX-512-BF16
  (``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16``), else float32;
- otherwise torch, with bfloat16 autocast where the CPU has those flags, else float32.

`build_window_net` returns the callable that `sliding_window.window_predictor` calls in place of the torch
module (the torch module itself, or an `OpenVinoWindowNet` compiled from the package's ONNX file), so every
feature of the predictor works with every runtime.
"""
from __future__ import annotations

import hashlib
import itertools
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, FrozenSet, Optional, Tuple

import torch

from ..errors import InputError, MedSSLError, ResourceError
from ..home import medssl_home
from .openvino_runtime import openvino_available

RUNTIMES = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})  # f16 arithmetic OpenVINO's CPU plugin uses for an f16 hint
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_OV_HINT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
OPENVINO_CACHE = "openvino_cache"  # OpenVINO's CACHE_DIR, beside model.onnx
# Memory the ONNX export and the OpenVINO compile and first call take beyond the torch network itself, per byte of
# its weights: SwinUNETR-H (4.64 GB), on the Zen 4: the export 5.2 GB more, OpenVINO f32's compile and first call on
# two 96^3 windows 17.4 GB more (3.7x; README).
OPENVINO_BUILD_FACTOR = 3.8
_AMP = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo, e.g. macOS)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """The CPU computes bfloat16 natively (AMX or AVX-512-BF16): where bf16 autocast is faster, not emulated."""
    return bool(BF16_FLAGS & cpu_flags())


def cpu_vector_units(flags: FrozenSet[str]) -> str:
    """The widest vector units among ``flags``, in words: what sets the CPU's speed in the README's figures (the
    kinds measured: AMX, AVX-512-BF16 without AMX, AVX2 only; they differ by a factor of 2-5)."""
    if "amx_bf16" in flags:
        return "AMX (native bf16)"
    if "avx512_bf16" in flags:
        return "AVX-512-BF16 (native bf16), no AMX"
    if "avx512f" in flags:
        return "AVX-512 without bf16 (no native bf16)"
    return ("AVX2" if "avx2" in flags else "no AVX2") + " (no native bf16)"


def cpu_description(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and vector units, e.g. ``"AMD EPYC, AVX-512-BF16 (native bf16), no AMX"``."""
    name = "unknown CPU"
    try:
        with open(path) as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {cpu_vector_units(cpu_flags(path))}"


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "torch" | "openvino"
    precision: str  # "float32" | "bfloat16" | "float16"
    reason: str

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        """torch autocast dtype (None: plain float32); OpenVINO sets its precision itself."""
        return _AMP[self.precision] if self.runtime == "torch" else None

    @property
    def openvino_hint(self) -> str:
        return _OV_HINT[self.precision]

    def describe(self, device: torch.device) -> str:
        return f"runtime: {self.runtime} {self.precision} on {device.type} ({self.reason})"


def _auto_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bfloat16"
    return "float32"


def _precision_reason(device: torch.device, precision: str, asked: str) -> str:
    if asked != "auto":
        return f"--precision {asked}"
    if device.type == "cuda":
        return "CUDA GPU" + (" with bf16" if precision == "bfloat16" else " without bf16")
    return "CPU has AMX/AVX-512-BF16" if precision == "bfloat16" else "CPU without native bf16"


def choose_runtime(runtime: str = "auto", device: torch.device = torch.device("cpu"),
                   precision: str = "auto") -> RuntimeChoice:
    """See the module docstring; an impossible explicit request is a one-line `InputError`."""
    runtime, precision = (runtime or "auto").lower(), (precision or "auto").lower()
    if runtime not in RUNTIMES:
        raise InputError(f"unknown --runtime {runtime!r}; use {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown --precision {precision!r}; use {', '.join(PRECISIONS)}")
    if runtime == "openvino":
        if device.type != "cpu":
            raise InputError(f"--runtime openvino runs on the CPU; add --device cpu or use --runtime torch on {device}")
        if not openvino_available():
            raise InputError("--runtime openvino needs the openvino package; install it with "
                             "'pip install -c constraints.txt medssl[openvino]' or use --runtime torch")
    if runtime == "auto":
        use_ov = device.type == "cpu" and is_x86() and openvino_available()
        runtime = "openvino" if use_ov else "torch"
    chosen = _auto_precision(device) if precision == "auto" else precision
    if runtime == "torch" and device.type == "cpu" and chosen == "float16":
        raise InputError("--precision float16 is for GPUs; on the CPU use bfloat16 or float32")
    if runtime == "openvino" and chosen == "float16" and not FP16_FLAGS & cpu_flags():
        # OpenVINO's CPU plugin runs an f16 hint as bf16 where the CPU has no f16 arithmetic (measured on a Zen 4:
        # probabilities equal to bf16's); saying "float16" would be untrue
        raise InputError("--precision float16 needs a CPU with AVX512-FP16 or AMX-FP16, which this one lacks "
                         "(OpenVINO would run bfloat16); use bfloat16 or float32")
    why = _precision_reason(device, chosen, precision)
    if runtime == "openvino":
        why += ", openvino installed"
    elif device.type == "cpu" and is_x86() and not openvino_available():
        why += "; 'pip install medssl[openvino]' makes the CPU faster"
    return RuntimeChoice(runtime, chosen, why)


def build_window_net(predictor, sink) -> Tuple[RuntimeChoice, Callable[[torch.Tensor], torch.Tensor]]:
    """(choice, window callable) for a `Predictor`; says in one ``log`` line what was chosen. With ``auto``, a
    network that cannot be exported to ONNX runs in torch instead (also said in that line)."""
    choice = choose_runtime(predictor.runtime, predictor.device, predictor.precision)
    net = predictor.net
    if choice.runtime == "openvino":
        try:
            net = _openvino_net(predictor, choice)
        except MedSSLError as exc:
            if predictor.runtime != "auto":
                raise
            fallback = choose_runtime("torch", predictor.device, predictor.precision)
            choice = RuntimeChoice("torch", fallback.precision, f"{fallback.reason}; OpenVINO not used: {exc}")
    sink.emit("log", message=choice.describe(predictor.device))
    return choice, net


def _openvino_net(predictor, choice: RuntimeChoice):
    """The package's ONNX file (exported on first use) compiled by OpenVINO, its cache beside the package."""
    from .onnx_export import package_onnx, runtime_dir
    from .openvino_runtime import OpenVinoWindowNet

    plan = predictor.plan
    check_openvino_fits(predictor.net)
    sha = predictor.metadata.get("weights_sha256") or _state_sha256(predictor.net)
    folder = runtime_dir(predictor.package_dir, sha) if predictor.package_dir else medssl_home() / "runtime" / sha[:16]
    onnx = package_onnx(folder, predictor.net, plan.patch_size, plan.num_channels, plan.num_classes, sha)
    cache = folder / OPENVINO_CACHE
    return OpenVinoWindowNet(onnx, choice.openvino_hint, cache)


def check_openvino_fits(net: torch.nn.Module) -> None:
    """`ResourceError` when exporting and compiling ``net`` would need more than the free memory (`OPENVINO_BUILD_FACTOR`
    times its weights): with ``auto`` the prediction then runs in torch, as for a network that cannot be exported."""
    from .resources import GB, available_gb

    tensors = itertools.chain(net.parameters(), net.buffers())  # each shared tensor once (torch deduplicates)
    weights = sum(t.numel() * t.element_size() for t in tensors) / GB
    need, free = OPENVINO_BUILD_FACTOR * weights, available_gb(torch.device("cpu"))
    if need > free:
        raise ResourceError(f"exporting and compiling this {weights:.1f} GB network needs about {need:.1f} GB more "
                            f"memory but this machine has {free:.1f} GB free; use --runtime torch")


def _state_sha256(net: torch.nn.Module) -> str:
    """A digest of the weights, for a network that came without a package (names the exported file)."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()
