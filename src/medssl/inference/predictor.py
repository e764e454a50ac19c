"""Predictor: a model package applied to images, output on the input grid.

    from medssl import Predictor
    pred = Predictor.from_package("my_model/", device="auto")
    result = pred.predict(["t1.nii.gz"], tta=True, uncertainty=True)
    result.labels  # SimpleITK label image on the input grid; result.uncertainty: entropy map

Pipeline: read -> `preprocess` (the plan's) -> sliding window (MONAI, Gaussian blending) -> `postprocess`
back onto the input grid. Large volumes are stitched in a rolling buffer (`StreamingStitcher`, in tiles
on the input grid, the volume in bfloat16 where that is lossless) unless probabilities are requested; a CUDA out-of-memory error is retried with a smaller window batch, then on the CPU.
The window network is run by the engine `runtimes.choose_runtime` picks (``runtime="auto"``: torch autocast on
a GPU, OpenVINO on an x86 CPU, else torch), built once on first use and kept for every later case.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk
import torch

from ..data.label_resample import class_argmax
from ..data.postprocess import SlabLabels, entropy, scalar_to_input_grid, scores_to_input_grid, scores_to_labels
from ..data.preprocess import Preprocessed, preprocess
from ..errors import InputError
from ..events import EtaClock, EventSink, NullSink
from ..hub.package import load_package
from ..io.dir_swap import recover_dir
from ..io.geometry import image_from_ijk
from ..io.volume_io import read_image
from ..plan import Plan, check_channel_count
from .devices import resolve_device
from .resources import GB, available_gb, return_freed_memory
from .runtimes import RuntimeChoice, build_window_net, choose_runtime
from .sliding_window import WindowSettings, count_windows, probabilities
from .streaming import StreamingStitcher, bf16_is_lossless, first_window, stream_axis
from .windows import monai_padding

ImageLike = Union[str, Path, sitk.Image]
LOW_MEMORY_BYTES = 0.5e9  # stream the stitching when full-volume class scores would exceed this (issue 19: a
# 512x512x300 CT, 14 classes, at 1.6 mm peaked at 2.57 GB on the full path; the streamed one keeps float16 scores)
SMALL_WINDOW_VOXELS = 64**3  # low-memory runs windows one at a time from this size on, smaller ones two at a time


def low_memory_batch(roi: Sequence[int]) -> int:
    """Windows per network call when memory is short: 1 for large ROIs (ResEnc-tiny at 128^3: 0.5 GB less than
    two), 2 below `SMALL_WINDOW_VOXELS`, where two windows cost little and a batch of one is slow: torch's float32
    CPU convolution leaves oneDNN for a native loop when ``N*C*D*H <= 20480`` (aten/src/ATen/native/Convolution.cpp,
    ``use_mkldnn``): at 32^3 one window took 0.113 s, two 0.041 s (resenc:test, one thread)."""
    return 1 if int(np.prod(roi)) >= SMALL_WINDOW_VOXELS else 2


TILE_BUFFER_BYTES = 192 * 2**20  # on the input grid, the rolling buffer is split into tiles of at most this size
# (a 512x512x300 CT at ROI 128, 14 classes: 4 tiles of 150 MB, 280 windows; 256 MB: 3 tiles of 225 MB, 252 windows)


@dataclass
class Prediction:
    labels: sitk.Image
    probabilities: Optional[sitk.Image] = None  # vector image, one component per class
    uncertainty: Optional[sitk.Image] = None  # normalised entropy in [0, 1]


class Predictor:
    """A fine-tuned network with its plan; see the module docstring."""

    def __init__(self, plan: Plan, net: torch.nn.Module, device: torch.device, metadata: Optional[Dict] = None,
                 runtime: str = "torch", precision: str = "auto", package_dir: Optional[Path] = None):
        self.plan, self.net, self.device, self.metadata = plan, net.to(device).eval(), device, metadata or {}
        self.runtime, self.precision, self.package_dir = runtime, precision, package_dir
        self.choice: Optional[RuntimeChoice] = None
        self._window_net = None
        self._bf16_lossless = True  # until a probe says otherwise (`_held_volume`)
        choose_runtime(runtime, device, precision)  # an impossible request fails here, before any reading

    @classmethod
    def from_package(cls, path: str | Path, device: str = "auto", runtime: str = "auto",
                     precision: str = "auto") -> "Predictor":
        dev = resolve_device(device)
        recover_dir(path)  # a package whose replacement was killed half-way is completed first
        plan, net, meta = load_package(path, check_forward=False)  # weights checked finite; predict runs it next
        return cls(plan, net, dev, meta, runtime, precision, Path(path))

    def window_net(self, sink: Optional[EventSink] = None):
        """The callable run on each window batch (built, exported and compiled once; see `runtimes`)."""
        if self._window_net is None:
            self.choice, self._window_net = build_window_net(self, sink or NullSink())
        return self._window_net

    def settings(self, overlap: Optional[float] = None, tta: bool = False,
                 sw_batch_size: Optional[int] = None) -> WindowSettings:
        sw = self.plan.sliding_window
        overlap = sw.overlap if overlap is None else float(overlap)
        if not 0 <= overlap < 1:
            raise InputError(f"overlap {overlap} is out of range; use a value in [0, 1), e.g. 0.5")
        return WindowSettings.from_plan(self.plan, overlap, tta, sw_batch_size)

    def predict(self, images: Sequence[ImageLike], overlap: Optional[float] = None, tta: bool = False,
                sw_batch_size: Optional[int] = None, low_memory: Optional[bool] = None, probabilities: bool = False,
                uncertainty: bool = False, sink: Optional[EventSink] = None) -> Prediction:
        """Segment one case (one image per plan channel, all on one grid)."""
        sink = sink or NullSink()
        if isinstance(images, (str, os.PathLike, sitk.Image)):  # one channel given alone, not as a list
            images = [images]
        images = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in images]
        if sw_batch_size is not None and (isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int)
                                          or sw_batch_size < 1):
            raise InputError(f"sw_batch_size {sw_batch_size!r} is out of range; use a whole number of 1 or more")
        return_freed_memory()  # before reading: the volume's copies then leave no resident heap behind
        channels = [read_image(i, "input image") if not isinstance(i, sitk.Image) else _checked_image(i, n)
                    for n, i in enumerate(images)]
        check_channel_count(self.plan, len(channels), "input")
        names = [str(i) if not isinstance(i, sitk.Image) else f"channel {n + 1}" for n, i in enumerate(images)]
        sink.emit("progress", stage="preprocess", done=0, total=1)
        pre = preprocess(channels, self.plan, names=names)
        del channels  # the network-grid copy is all that is needed from here on
        settings = self.settings(overlap, tta, sw_batch_size)
        if low_memory is None:
            low_memory = self._needs_low_memory(pre) and not probabilities
        if low_memory and probabilities:
            raise InputError("--probabilities needs the whole probability map in memory; drop --low-memory or "
                             "--probabilities")
        if low_memory and sw_batch_size is None:
            settings.sw_batch_size = low_memory_batch(settings.roi)
        return self._run_with_oom_retry(pre, settings, low_memory, probabilities, uncertainty, sink)

    def _needs_low_memory(self, pre: Preprocessed) -> bool:
        """Full-volume float32 class scores above 0.5 GB, or above a quarter of the free RAM, are streamed."""
        limit = min(LOW_MEMORY_BYTES, 0.25 * available_gb(torch.device("cpu")) * GB)
        return self.plan.num_classes * pre.image[0].size * 4 > limit

    def _run_with_oom_retry(self, pre, settings, low_memory, want_probs, want_unc, sink) -> Prediction:
        while True:
            try:
                return self._run(pre, settings, low_memory, want_probs, want_unc, sink)
            except torch.cuda.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                torch.cuda.empty_cache()
                if settings.sw_batch_size > 1:
                    settings.sw_batch_size //= 2
                    sink.emit("log", message=f"GPU out of memory: retrying with sw batch size {settings.sw_batch_size}")
                else:
                    sink.emit("log", message="GPU out of memory: retrying on the CPU")
                    self.device = torch.device("cpu")
                    self.net.to(self.device)
                    self.runtime, self._window_net = "torch", None  # precision chosen again for the CPU

    def _run(self, pre: Preprocessed, settings: WindowSettings, low_memory: bool, want_probs: bool,
             want_unc: bool, sink: EventSink) -> Prediction:
        image = torch.from_numpy(pre.image).unsqueeze(0)
        if low_memory:
            stitcher = self._stitcher(settings, pre.record.identity())
            progress = _WindowProgress(sink, stitcher.window_count(image.shape[2:], self.plan.num_classes),
                                       len(settings.mirror_axes))
            image, probe = self._held_volume(image, settings, pre)
            net = self.window_net(sink)
            amp = self.choice.amp_dtype if self.choice else None
            if probe is not None and not bf16_is_lossless(net, probe, amp):
                self._bf16_lossless = False
                sink.emit("log", message="the network does not round its input to bfloat16 first: this case was "
                          "predicted from a bfloat16-rounded volume, later ones are held in float32")
            del probe
            result = self._streamed_labels(stitcher, net, image, progress, want_unc, amp, pre)
        else:
            net = self.window_net(sink)
            amp = self.choice.amp_dtype if self.choice else None
            progress = _WindowProgress(sink, count_windows(pre.image.shape[1:], settings), len(settings.mirror_axes))
            probs = probabilities(net, image, settings, self.device, torch.float32, progress, amp)[0].numpy()
            sink.emit("progress", stage="postprocess", done=0, total=1)
            result = Prediction(
                scores_to_labels(probs, pre.record, self.plan.label_values()),
                scores_to_input_grid(probs, pre.record) if want_probs else None,
                scalar_to_input_grid(entropy(probs), pre.record) if want_unc else None)
        sink.emit("progress", stage="postprocess", done=1, total=1)
        return result

    def _stitcher(self, settings: WindowSettings, identity: bool) -> StreamingStitcher:
        """Tiles of `TILE_BUFFER_BYTES` on the input grid (any block order will do there); whole cross-sections
        for `SlabLabels`. Class sums in float32 with a float32 network, else float16 (11-bit mantissa: finer than
        the bfloat16 or float16 outputs they add up)."""
        choice = self.choice or choose_runtime(self.runtime, self.device, self.precision)  # before the runtime is built
        reduced = choice.precision != "float32"
        return StreamingStitcher(settings, TILE_BUFFER_BYTES if identity else None,
                                 torch.float16 if reduced else torch.float32)

    def _held_volume(self, image: torch.Tensor, settings: WindowSettings, pre: Preprocessed):
        """(volume the windows are cut from, float32 probe window or None). On the CPU with a bfloat16 network the
        volume is held in bfloat16 (`bf16_is_lossless`, checked on the probe once the runtime is built) and the
        float32 copy released before the runtime allocates its buffers (a CPU run is never retried)."""
        choice = self.choice or choose_runtime(self.runtime, self.device, self.precision)
        if self.device.type != "cpu" or choice.precision != "bfloat16" or not self._bf16_lossless:
            return image, None
        probe = first_window(image, settings.roi)
        held = image.to(torch.bfloat16)
        pre.image = np.empty((0,) * pre.image.ndim, np.float32)
        return held, probe

    def _streamed_labels(self, stitcher, net, image, progress, want_unc, amp, pre: Preprocessed) -> Prediction:
        """Low-memory path: finished blocks of the rolling buffer are reduced at once. On the input grid, to
        labels; otherwise to float16 scores that `SlabLabels` resamples onto the input grid slab by slab as soon
        as the slab's network block is complete, dropping what no later slab reads (same result as the full path)."""
        return_freed_memory()
        shape, identity, k = image.shape[2:], pre.record.identity(), self.plan.num_classes
        index = np.zeros(shape, np.uint8 if k < 256 else np.uint16) if identity else None
        padded = [s + a + b for s, (a, b) in zip(shape, monai_padding(shape, stitcher.settings.roi))]
        axis = stream_axis(padded)
        slabs = None if identity else SlabLabels(pre.record, self.plan.label_values(), axis)
        unc = np.zeros(shape, np.float32) if want_unc else None
        for region, probs in stitcher.run(net, image, self.device, k, progress, amp):
            if identity:
                index[region] = class_argmax(probs)
            else:
                slabs.add(region[axis].start, probs.numpy().astype(np.float16))
            if unc is not None:
                unc[region] = entropy(probs.numpy())
            del probs
        values = np.asarray(self.plan.label_values())
        if identity:
            labels = image_from_ijk(values.astype(np.uint8 if values.max() < 256 else np.uint16)[index], pre.record.input_grid)
        else:
            labels = slabs.result()
        return Prediction(labels, None, scalar_to_input_grid(unc, pre.record) if unc is not None else None)


class _WindowProgress:
    """Counts windows MONAI has processed and emits ``progress`` events with an ETA."""

    def __init__(self, sink: EventSink, total: int, n_mirror_axes: int) -> None:
        self.sink, self.total, self.done = sink, total, 0
        self.clock = EtaClock(total)
        sink.emit("progress", stage="sliding_window", done=0, total=total, tta_copies=2 ** n_mirror_axes)

    def __call__(self, n: int) -> None:
        self.done += n
        self.sink.emit("progress", stage="sliding_window", done=self.done, total=self.total,
                       eta_s=self.clock.eta(self.done))


def _checked_image(image: sitk.Image, index: int) -> sitk.Image:
    """An in-memory input gets the checks a file gets (3D, one component, finite spacing): a vector or 2D image
    had failed inside SimpleITK with a multi-line error."""
    from ..io.volume_io import _check_3d_scalar

    _check_3d_scalar(image, f"channel {index + 1}", "input image")
    return image


def predict_files(model: str | Path, inputs: List[str], device: str = "auto", runtime: str = "auto",
                  **kwargs) -> Prediction:
    """Convenience: ``Predictor.from_package(model, device, runtime).predict(inputs, **kwargs)``."""
    return Predictor.from_package(model, device, runtime).predict(inputs, **kwargs)
