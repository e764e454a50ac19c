"""The package's window network as an ONNX file (``model.onnx`` beside ``weights.safetensors``).

The network is exported once per weights file with torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``, which needs the ``onnx`` package). Chosen by measurement on the
project's 2-core reference machine (resenc:tiny, ROI 48, see README "Inference runtimes"): it exports in 2.9 s
against 5.8 s for the dynamo exporter (which also needs ``onnxscript``) and 3-11 s for
``openvino.convert_model`` on the torch module, and the three graphs run equally fast in OpenVINO. The file is
then usable by any ONNX tool (OpenVINO, ONNX Runtime). Input ``image (N, C, *roi)`` with a dynamic batch,
output ``logits (N, K, *roi)``. A sidecar ``model.onnx.json`` records the sha256 of the weights and the ROI,
so an ONNX file left from older weights is never used. A package folder that cannot be written (a read-only
install) gets its ONNX file in the medssl home instead (``runtime/<weights sha256>/``).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import torch

from ..errors import InputError, PackageError
from ..home import medssl_home

ONNX_NAME = "model.onnx"
OPSET = 17


def runtime_dir(package: str | Path, weights_sha256: str) -> Path:
    """Where the ONNX file and OpenVINO's cache live: the package folder when writable, else the home cache."""
    package = Path(package)
    if os.access(package, os.W_OK):
        return package
    return medssl_home() / "runtime" / weights_sha256[:16]


def onnx_record(roi: Sequence[int], weights_sha256: str, in_channels: int, num_classes: int) -> Dict:
    return {"weights_sha256": weights_sha256, "roi": [int(r) for r in roi], "in_channels": int(in_channels),
            "num_classes": int(num_classes), "opset": OPSET, "torch": torch.__version__}


def current_onnx(folder: Path, record: Dict) -> Optional[Path]:
    """``folder/model.onnx`` when its sidecar matches ``record`` (same weights, ROI and channels), else None."""
    path, side = folder / ONNX_NAME, folder / (ONNX_NAME + ".json")
    try:
        saved = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    keys = ("weights_sha256", "roi", "in_channels", "num_classes")
    whole = path.is_file() and (not saved.get("external_data") or path.with_name(ONNX_NAME + ".data").is_file())
    return path if whole and all(saved.get(k) == record[k] for k in keys) else None


def export_onnx(net: torch.nn.Module, roi: Sequence[int], in_channels: int, out: Path, record: Dict) -> Path:
    """Export ``net`` (eval mode, CPU, float32) to ``out``; the sidecar is written last, so a half-written
    export is never taken for a finished one. The exporter writes into a temporary folder beside ``out``: a network
    over protobuf's 2 GB (SwinUNETR-H: 4.6 GB) comes out as one file per tensor there (139 for SwinUNETR-H), which
    `_weights_in_one_file` turns into ``out`` + ``out.data`` (ONNX external data); nothing else lands beside it."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; checked here for a one-line error)
    except ImportError:
        raise InputError("exporting to ONNX needs the onnx package; install it with "
                         "'pip install -c constraints.txt medssl[openvino]' (or 'make install')") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    net = net.to("cpu").float().eval()
    example = torch.zeros(1, in_channels, *[int(r) for r in roi])
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.export-") as work:
        exported = Path(work) / "exported" / ONNX_NAME
        exported.parent.mkdir()
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's concern
                torch.onnx.export(net, (example,), str(exported), dynamo=False, opset_version=OPSET,
                                  input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:  # noqa: BLE001  (any exporter failure becomes one line with what to do)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise PackageError(f"this network cannot be exported to ONNX ({first}); use --runtime torch") from None
        final = _weights_in_one_file(exported, Path(work) / "final" / ONNX_NAME, out.name)
        data = out.with_name(out.name + ".data")
        if (final.parent / data.name).exists():
            os.replace(final.parent / data.name, data)
        else:
            data.unlink(missing_ok=True)  # an earlier, larger export's weights
        os.replace(final, out)
    (out.parent / (out.name + ".json")).write_text(json.dumps({**record, "external_data": data.is_file()}, indent=1))
    return out


def _weights_in_one_file(exported: Path, final: Path, name: str) -> Path:
    """``exported`` as it is when the exporter wrote one file; else (tensors as separate external-data files) the
    model at ``final`` with every tensor in ``final``'s folder as ``<name>.data``, the location it records. The
    tensor files are appended one by one (`_append_tensor_file`): the weights are never all in memory at once
    (``onnx.load`` with the data would hold another 4.6 GB for SwinUNETR-H)."""
    if [p.name for p in exported.parent.iterdir()] == [exported.name]:
        return exported
    import onnx

    model = onnx.load(str(exported), load_external_data=False)
    final.parent.mkdir()
    with open(final.parent / (name + ".data"), "wb") as data:
        for tensor in _model_tensors(model):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                _append_tensor_file(tensor, exported.parent, data, name + ".data")
    onnx.save_model(model, str(final))  # the graph only: a few MB
    return final


def _model_tensors(model) -> Iterator:
    """Every ``TensorProto`` of an ONNX model that can hold external data: the graph's initializers and the
    tensor-valued node attributes (Constant's ``value``), in subgraphs (If/Loop bodies) and functions too; the
    same set as onnx's private ``external_data_helper._get_all_tensors``."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph) -> Iterator:
    yield from graph.initializer
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for graph in attribute.graphs:
                yield from _graph_tensors(graph)


def _append_tensor_file(tensor, folder: Path, data, location: str, chunk: int = 64 << 20) -> None:
    """Copy ``tensor``'s external bytes (``folder/<its location>``, offset, length) to the end of ``data``, at a
    4 KiB boundary (each tensor can be memory-mapped), and point the tensor there (``location``, ``offset``, ``length``)."""
    import onnx

    info = {e.key: e.value for e in tensor.external_data}
    source = folder / info["location"]
    offset, length = int(info.get("offset", 0)), info.get("length")
    length = source.stat().st_size - offset if length is None else int(length)
    data.write(b"\0" * (-data.tell() % 4096))
    start = data.tell()
    with open(source, "rb") as src:
        src.seek(offset)
        left = length
        while left:
            block = src.read(min(chunk, left))
            if not block:
                raise PackageError(f"the ONNX exporter's file {source.name} is shorter than its tensor; export again")
            data.write(block)
            left -= len(block)
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", start), ("length", length)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)


def package_onnx(folder: Path, net: torch.nn.Module, roi: Sequence[int], in_channels: int,
                 num_classes: int, weights_sha256: str, force: bool = False) -> Path:
    """``folder/model.onnx`` (``folder``: `runtime_dir`), exported first when missing or from other weights."""
    record = onnx_record(roi, weights_sha256, in_channels, num_classes)
    found = None if force else current_onnx(folder, record)
    return found or export_onnx(net, roi, in_channels, folder / ONNX_NAME, record)
