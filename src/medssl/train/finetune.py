"""Fine-tune a (pretrained) backbone on a few labelled volumes and write a model package.

    from medssl.train.finetune import finetune
    finetune(images=["ct1.nii.gz", "ct2.nii.gz"], labels=["seg1.seg.nrrd", "seg2.seg.nrrd"],
             out="liver_model", backbone="openmind_resencl_mae", preset="quick")

Steps: resolve the backbone (architecture, inherited preprocessing, weights) -> read cases and settle the
label set -> build the plan (`planning.make_finetune_plan`) -> `preprocess` every case once -> train with
`TrainLoop` (Dice + CE, foreground-oversampled augmented patches) while validating per-class Dice by
sliding window -> package the best weights. The run state lives in ``<out>/training/`` so ``resume=True``
continues exactly where a killed or cancelled run stopped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.datasets import CaseFiles, collect_cases, label_set, to_class_indices, value_lookup
from ..data.preprocess import preprocess
from ..data.sampling import Case, PatchBatches
from ..errors import InputError
from ..events import EventSink, NullSink
from ..hub.backbone_source import BackboneSource, resolve_backbone
from ..hub.package import save_package
from ..inference.devices import resolve_device
from ..inference.resources import check_training_fits
from ..io.atomic import ensure_writable_dir, write_text_atomic
from ..io.dir_swap import recover_dir
from ..io.labels import LabelMap, read_label_map
from ..io.volume_io import read_image
from ..models import build_from_plan
from ..plan import Plan
from .auto_preset import fit_finetuning, uses_amp
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FinetuneConfig, load_config, to_dict
from .loop import TrainLoop
from .planning import make_finetune_plan
from .segmentation_task import SegmentationTask, validate_cases


@dataclass
class RunPaths:
    out: Path

    @property
    def run_dir(self) -> Path:
        return self.out / "training"

    @property
    def plan(self) -> Path:
        return self.run_dir / "plan.json"

    @property
    def inputs(self) -> Path:
        return self.run_dir / "inputs.json"

    @property
    def config(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def best(self) -> Path:
        return self.run_dir / "model_best.pt"


def finetune(images: Sequence[str], labels: Sequence[str], out: str | Path, backbone: str = "resenc:tiny",
             preset: Optional[str] = "auto", config_yaml: Optional[str] = None, overrides: Optional[Dict] = None,
             val_images: Sequence[str] = (), val_labels: Sequence[str] = (), device: str = "auto",
             resume: bool = False, overwrite: bool = False, label_names: Optional[Dict[int, str]] = None,
             channel_names: Optional[Sequence[str]] = None, sink: Optional[EventSink] = None,
             accept_licence: bool = False) -> Path:
    """Train and write the package ``out``; returns its path. See the module docstring. ``accept_licence``:
    see `resolve_backbone`."""
    sink = sink or NullSink()
    paths = RunPaths(Path(out))
    auto = preset in (None, "", "auto")
    cfg = load_config(FinetuneConfig, "finetune", "quick" if auto else preset, config_yaml, overrides)
    _check_out(paths, resume, overwrite)
    dev = resolve_device(device)
    train_files = collect_cases(images, labels)
    val_files = collect_cases(val_images, val_labels) if val_images else []
    source = resolve_backbone(backbone, accept_licence=accept_licence)
    plan, train, val = _prepare_data(paths, train_files, val_files, source, cfg, resume, label_names, channel_names, sink)
    sink.emit("log", message=f"backbone {source.name}: {source.arch.backbone} + {source.arch.decoder} decoder; "
                             f"{len(train)} training and {len(val)} validation case(s); labels: "
                             f"{', '.join(lab.name for lab in plan.labels[1:])}")
    torch.manual_seed(cfg.seed)  # the same seed, data and thread count give the same model
    net = build_from_plan(plan).to(dev)
    if not (resume and (paths.run_dir / "checkpoint_last.pt").exists()):
        _init_weights(net, source, sink)
    if cfg.freeze_backbone:
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    if auto:
        plan = _fit(paths, plan, net, cfg, dev, resume, sink)
    est = check_training_fits(net, plan.num_channels, plan.patch_size, cfg.batch_size, dev, amp=uses_amp(cfg.loop.amp, dev))
    sink.emit("log", message=f"estimated training memory {est.total_gb:.2f} GB on {dev}")
    return _train_and_package(paths, plan, net, train, val, cfg, source, dev, resume, sink)


def _fit(paths: RunPaths, plan: Plan, net, cfg: FinetuneConfig, dev: torch.device, resume: bool, sink) -> Plan:
    """``--preset auto`` (`auto_preset.fit_finetuning`): batch, then patch scaled to the memory; the run files
    record the result, and ``--resume`` keeps it."""
    if resume:
        cfg.batch_size = int(json.loads(paths.config.read_text())["config"].get("batch_size", cfg.batch_size))
        return plan
    batch, patch, note = fit_finetuning(net, plan.num_channels, plan.patch_size, cfg.batch_size, dev,
                                        uses_amp(cfg.loop.amp, dev))
    if note is None:
        return plan
    sink.emit("log", message=note)
    cfg.batch_size, plan = batch, plan.replace(patch_size=tuple(patch))
    saved = json.loads(paths.config.read_text())
    write_text_atomic(paths.config, json.dumps({**saved, "config": to_dict(cfg)}, indent=1, default=str))
    write_text_atomic(paths.plan, plan.to_json())
    return plan


def _check_out(paths: RunPaths, resume: bool, overwrite: bool) -> None:
    ensure_writable_dir(paths.out.parent, "output folder")
    recover_dir(paths.out)  # a kill while the package was being replaced: put it (and training/) back
    has_package = (paths.out / "plan.json").exists() or (paths.out / "weights.safetensors").exists()
    has_run = paths.plan.exists()  # a run killed before its plan was written holds nothing worth keeping
    if resume:
        if not paths.plan.exists():
            raise InputError(f"--resume: {paths.out} holds no interrupted run (no training/plan.json); start a "
                             f"new run without --resume")
        return
    if (has_package or has_run) and not overwrite:
        raise InputError(f"{paths.out} already holds a model or a run; pass --resume to continue the run, "
                         f"--overwrite to replace it, or choose another --out")
    if paths.run_dir.exists():
        import shutil

        shutil.rmtree(paths.run_dir)


def _read_case(files: CaseFiles):
    channels = [read_image(c, "image") for c in files.channels]
    label = read_label_map(files.label, "label map") if files.label else None
    return channels, label


def _prepare_data(paths: RunPaths, train_files, val_files, source: BackboneSource, cfg: FinetuneConfig,
                  resume: bool, label_names, channel_names, sink: EventSink):
    """Read, settle labels and plan, preprocess. On resume the stored plan is reused and inputs must match."""
    digest = _inputs_digest(train_files + val_files)
    read = [_read_case(f) for f in train_files + val_files]
    maps: List[LabelMap] = [lab for _, lab in read]
    if resume:
        plan = Plan.load(paths.plan)
        _check_same_inputs(paths, digest)
    else:
        base = source.plan_defaults.get("labels") if source.plan_defaults.get("labels") else None
        labels = label_set(maps, label_names, _base_if_compatible(base, maps))
        plan = make_finetune_plan(read, labels, source, cfg, channel_names)
    cases = [_to_case(ch, lab, plan, f) for (ch, lab), f in zip(read, train_files + val_files)]
    if not resume:  # only once every input has been checked: a bad input leaves nothing behind
        _write_run_files(paths, plan, cfg, digest, source)
    train, val = _split(cases[: len(train_files)], cases[len(train_files):], cfg, sink)
    return plan, train, val


def _base_if_compatible(base, maps):
    """Continue with the parent package's labels unless the new label maps name other structures."""
    if base is None:
        return None
    names = {lab.name.lower() for lab in base}
    if all(m.segments is None or all(s.name.lower() in names for s in m.segments) for m in maps):
        return base
    return None


def _to_case(channels, label: LabelMap, plan: Plan, files: CaseFiles) -> Case:
    table = value_lookup(label, plan.labels, str(files.label), plan.ignore_label)
    pre = preprocess(channels, plan, to_class_indices(label, table), names=files.channels)
    return Case(pre.image, pre.label.astype(np.uint8), files.name)


def _split(train: List[Case], val: List[Case], cfg: FinetuneConfig, sink: EventSink):
    if val:
        return train, val
    if len(train) < 2:
        sink.emit("log", message="one labelled case only: validation Dice is measured on the training case")
        return train, list(train)
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * cfg.val_fraction)))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]


def _inputs_digest(files: Sequence[CaseFiles]) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in files:
        for p in f.channels + [f.label or ""]:
            path = Path(p.split("::")[0])
            h.update(f"{p}|{path.stat().st_size if path.is_file() else 0}".encode())
    return h.hexdigest()[:16]


def _write_run_files(paths: RunPaths, plan: Plan, cfg: FinetuneConfig, digest: str, source: BackboneSource) -> None:
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.config, json.dumps({"config": to_dict(cfg), "backbone": source.name}, indent=1, default=str))
    write_text_atomic(paths.inputs, json.dumps({"digest": digest}))
    write_text_atomic(paths.plan, plan.to_json())


def _check_same_inputs(paths: RunPaths, digest: str) -> None:
    saved = json.loads(paths.inputs.read_text()).get("digest") if paths.inputs.exists() else None
    if saved != digest:
        raise InputError(f"--resume: the training files differ from those the run in {paths.out} started with; "
                         f"give the same --images/--labels, or start a new run with another --out")


def _init_weights(net: torch.nn.Module, source: BackboneSource, sink: EventSink) -> None:
    if source.init_weights is None:
        return
    report = source.init_weights(net)
    sink.emit("log", message=f"pretrained weights from {source.name}: {report.summary()}")


def _train_and_package(paths: RunPaths, plan: Plan, net, train, val, cfg: FinetuneConfig, source: BackboneSource,
                       dev: torch.device, resume: bool, sink: EventSink) -> Path:
    loop_cfg = cfg.loop
    if loop_cfg.num_workers == 0 and dev.type == "cuda":
        loop_cfg.num_workers = 2
    batches = PatchBatches(train, plan.patch_size, cfg.batch_size, cfg.seed, cfg.foreground_fraction, cfg.augment)
    task = SegmentationTask(net, plan.ignore_label, frozen_encoder=cfg.freeze_backbone)
    validate = lambda: validate_cases(net, val, plan, cfg.val_overlap, dev)  # noqa: E731
    on_best = lambda step: save_checkpoint({"model": net.state_dict(), "step": step}, paths.best)  # noqa: E731
    loop = TrainLoop(task, batches, loop_cfg, paths.run_dir, dev, sink, task="finetune", validate=validate,
                     on_best=on_best)
    if resume and loop.resume():
        sink.emit("log", message=f"resumed at step {loop.step} of {loop_cfg.steps}")
    result = loop.run()
    if paths.best.exists():
        net.load_state_dict(load_checkpoint(paths.best, "best model")["model"])
    meta = _package_metadata(plan, cfg, source, result, train, val)
    save_package(paths.out, plan, net.state_dict(), meta)
    sink.emit("done", task="finetune", package=str(paths.out), best_mean_dice=result.best_metric,
              best_step=result.best_step, steps=result.step)
    return paths.out


def _package_metadata(plan: Plan, cfg: FinetuneConfig, source: BackboneSource, result, train, val) -> Dict:
    return {
        "name": plan.provenance.get("name", "medssl model"),
        "licence": source.licence or "same as the training data and backbone",
        "provenance": {**source.provenance, "backbone": source.name, "steps": result.step,
                       "best_step": result.best_step, "best_mean_dice": result.best_metric,
                       "train_cases": [c.name for c in train], "val_cases": [c.name for c in val],
                       "plan_hash": plan.hash()},
        "training": to_dict(cfg),
    }
