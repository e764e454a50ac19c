"""The window network run by OpenVINO on the CPU: a callable ``(N, C, *roi)`` tensor -> logits tensor.

It stands in for the torch module in `sliding_window.window_predictor`, so TTA flips, MONAI stitching,
streamed stitching, probabilities and uncertainty are unchanged. The ONNX file is read once; a model with
a static batch is compiled per batch size met (usually one or two: the window batch and the last, smaller
one), with ``INFERENCE_PRECISION_HINT`` ``bf16`` or ``f32`` and OpenVINO's model cache (``CACHE_DIR``) so a
later process loads the compiled blob instead of compiling again. Threads follow torch's setting
(``OMP_NUM_THREADS`` / ``torch.set_num_threads``). API: OpenVINO 2024+ ``openvino.Core`` (Apache-2.0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import InputError


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoWindowNet:
    """See the module docstring; ``precision`` is ``"bf16"`` or ``"f32"``."""

    def __init__(self, onnx_path: Path, precision: str = "f32", cache_dir: Optional[Path] = None,
                 threads: Optional[int] = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise InputError("--runtime openvino needs the openvino package; install it with "
                             "'pip install -c constraints.txt medssl[openvino]' or use --runtime torch") from None
        self.core = ov.Core()
        self.model = self.core.read_model(str(onnx_path))
        self.precision = precision
        self.config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        if cache_dir is not None:
            self.config["CACHE_DIR"] = str(cache_dir)
        self._compiled: Dict[int, object] = {}
        self.batch: Optional[int] = None  # `run_at_batch`

    def run_at_batch(self, batch: int) -> None:
        """Pad every later call of fewer windows to ``batch`` (the sliding window's window batch; `sliding_window`
        sets it per run). A window's logits then depend only on the case and its settings, never on the batch
        sizes earlier cases compiled: OpenVINO's bf16 kernels compiled for a batch of 1 and of 2 differ by up to
        0.125 in a logit (2 and 4 agree), which gave a case segmented in a folder after others 253 voxels other
        than alone (a short last batch had been padded to whatever size was compiled already)."""
        self.batch = int(batch)

    def _compiled_for(self, batch: int):
        if batch not in self._compiled:
            model = self.model.clone()
            spatial = [int(d.get_length()) for d in list(model.input(0).get_partial_shape())[1:]]
            model.reshape([batch, *spatial])  # channels and ROI are static in the export; only N varies
            self._compiled[batch] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[batch]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x``. They are OpenVINO's own output buffer (``share_outputs``: no 14 x 128^3 float32 copy
        per window), valid until the next call; the caller reads them (softmax) before calling again."""
        n = int(x.shape[0])
        batch = max(n, self.batch or n)  # a last, short batch is padded to the run's batch, not compiled for its own
        data = x.detach().to("cpu", torch.float32)
        if batch > n:  # one more window costs ~12 ms, compiling (or loading) a model for the short batch 0.1-0.24 s
            data = torch.cat([data, data.new_zeros((batch - n, *data.shape[1:]))])
        # share_inputs=False: OpenVINO copies the windows into its own input tensor (0.9 MB for two 48^3 windows);
        # shared, the infer request would keep a view of this temporary array after it is freed
        out = self._compiled_for(batch)(np.ascontiguousarray(data.numpy()), share_inputs=False, share_outputs=True)[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))[:n]

    def to(self, _device) -> "OpenVinoWindowNet":
        return self  # runs on the CPU only; kept so the predictor can treat it like a module

    def eval(self) -> "OpenVinoWindowNet":
        return self
