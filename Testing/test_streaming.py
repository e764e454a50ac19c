"""The low-memory streamed stitcher gives MONAI's sliding-window result (same windows, weights, padding)."""
import pytest
import torch

from medssl.inference.sliding_window import WindowSettings, count_windows, probabilities
from medssl.inference.streaming import StreamingStitcher, stream_axis, stream_probabilities

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(8, 5, 3, padding=1)).eval()


@pytest.mark.parametrize("shape, roi, overlap, batch, mode, mirror", [
    ((40, 33, 50), (16, 16, 16), 0.5, 2, "gaussian", ()),      # streams along axis 1 (smallest cross-section)
    ((10, 60, 30), (16, 16, 16), 0.25, 3, "gaussian", (0, 2)),  # axis 0 shorter than the ROI: MONAI pads it
    ((70, 20, 12), (32, 24, 16), 0.6, 1, "constant", ()),      # anisotropic ROI, padding on two axes
    ((16, 16, 16), (16, 16, 16), 0.5, 1, "gaussian", (1,)),    # a single window
])
def test_streamed_equals_monai(net, shape, roi, overlap, batch, mode, mirror):
    x = torch.randn(1, 2, *shape)
    settings = WindowSettings(roi, overlap, mode, 0.125, batch, mirror)
    full = probabilities(net, x, settings, CPU)
    streamed = stream_probabilities(net, x, settings, CPU, 5)
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-6)
    assert torch.equal(streamed.argmax(1), full.argmax(1))


@pytest.mark.parametrize("shape, roi, overlap, batch, mode, mirror", [
    ((40, 33, 50), (16, 16, 16), 0.5, 2, "gaussian", ()),
    ((10, 60, 30), (16, 16, 16), 0.25, 3, "gaussian", (0, 2)),  # padded along axis 0
    ((70, 20, 12), (32, 24, 16), 0.6, 1, "constant", ()),
])
def test_full_path_equals_monai_sliding_window_inference(net, shape, roi, overlap, batch, mode, mirror):
    """`probabilities` is MONAI's loop without importing MONAI: the same numbers, bit for bit."""
    from monai.inferers import sliding_window_inference

    from medssl.inference.sliding_window import window_predictor

    x = torch.randn(1, 2, *shape)
    settings = WindowSettings(roi, overlap, mode, 0.125, batch, mirror)
    with torch.inference_mode():
        ref = sliding_window_inference(x, roi, batch, window_predictor(net, CPU, mirror, torch.float32),
                                       overlap=overlap, mode=mode, sigma_scale=0.125, sw_device=CPU, device=CPU)
    got = probabilities(net, x, settings, CPU)
    assert got.shape == ref.shape and torch.equal(got, ref)


def test_stream_visits_each_monai_window_once(net):
    x = torch.randn(1, 2, 37, 29, 41)
    settings = WindowSettings((16, 16, 16), 0.5, "gaussian", 0.125, 4)
    seen = []
    blocks = list(StreamingStitcher(settings).run(net, x, CPU, 5, on_windows=seen.append))
    assert sum(seen) == count_windows(x.shape[2:], settings)
    axis = stream_axis(x.shape[2:])
    covered = sorted((r[axis].start, r[axis].stop) for r, _ in blocks)
    assert covered[0][0] == 0 and covered[-1][1] == x.shape[2 + axis]
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # contiguous, no slice handed out twice


def test_batches_run_across_window_starts(net):
    """One window per start (a 16x16 cross-section): batches of 2 still fill, and the result is MONAI's."""
    from medssl.inference.predictor import low_memory_batch

    x = torch.randn(1, 2, 16, 16, 90)
    settings = WindowSettings((16, 16, 16), 0.5, "gaussian", 0.125, 2)
    seen = []
    streamed = torch.cat([p for _, p in StreamingStitcher(settings).run(net, x, CPU, 5, on_windows=seen.append)], 3)
    assert seen == [2] * 5 + [1]  # 11 windows: before, a batch of one window per start
    assert torch.allclose(streamed[None], probabilities(net, x, settings, CPU), atol=1e-6)
    # torch's float32 CPU convolution is slow on a batch of one small window: low memory runs two up to 64^3
    assert low_memory_batch((48, 48, 48)) == 2 and low_memory_batch((64, 64, 64)) == low_memory_batch((128,) * 3) == 1


def test_stream_buffer_is_one_roi_deep(net, monkeypatch):
    """Peak buffer = classes x cross-section x ROI, not classes x voxels."""
    from medssl.inference import streaming
    sizes = []
    original = streaming._RollingBuffer.__init__

    def spy(self, *args):
        original(self, *args)
        sizes.append(self.sums.numel())

    monkeypatch.setattr(streaming._RollingBuffer, "__init__", spy)
    x = torch.randn(1, 2, 20, 24, 96)
    stream_probabilities(net, x, WindowSettings((16, 16, 16), 0.5, "gaussian", 0.125, 2), CPU, 5)
    assert stream_axis(x.shape[2:]) == 2 and sizes == [5 * 20 * 24 * 16]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_streamed_on_cuda_equals_monai(net):
    """Windows run on the GPU, stitching stays on the CPU (as MONAI's ``device=cpu``)."""
    x = torch.randn(1, 2, 40, 33, 50)
    settings = WindowSettings((16, 16, 16), 0.5, "gaussian", 0.125, 2, (0,))
    gpu, gpu_net = torch.device("cuda"), net.to("cuda")
    try:
        full = probabilities(gpu_net, x, settings, gpu)
        streamed = stream_probabilities(gpu_net, x, settings, gpu, 5)
    finally:
        net.to("cpu")
    assert streamed.device.type == "cpu" and torch.allclose(streamed, full, atol=1e-5)


def test_finished_slices_come_in_small_chunks_and_still_equal_monai(net, monkeypatch):
    """With a tiny chunk budget every finished block is one slice thick, and the result does not change."""
    from medssl.inference import streaming
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 1)
    x = torch.randn(1, 2, 20, 24, 40)
    settings = WindowSettings((16, 16, 16), 0.5, "gaussian", 0.125, 2)
    axis = stream_axis(x.shape[2:])
    blocks = list(StreamingStitcher(settings).run(net, x, CPU, 5))
    assert len(blocks) == x.shape[2 + axis] and all(b.shape[1 + axis] == 1 for _, b in blocks)
    assert torch.allclose(stream_probabilities(net, x, settings, CPU, 5), probabilities(net, x, settings, CPU), atol=1e-6)
