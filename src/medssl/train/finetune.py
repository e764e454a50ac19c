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
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.datasets import CaseFiles, collect_cases, label_set, to_class_indices, value_lookup
from ..data.preprocess import preprocess, target_grid
from ..data.sampling import Case, PatchBatches
from ..data.sparse import check_axis_name, labelled_index, make_sparse
from ..events import EventSink, NullSink
from ..hub.backbone_source import resolve_backbone
from ..hub.package import save_package
from ..hub.source import BackboneSource
from ..inference.devices import resolve_device
from ..errors import InputError
from ..io.atomic import write_text_atomic
from ..io.geometry import Grid, same_grid
from ..hub.recipes import get_recipe
from ..io.labels import LabelMap, read_label_map
from ..io.volume_io import read_image
from ..models import build_from_plan
from ..models.fresh_init import build_fresh_only
from ..plan import Plan, SlidingWindowSpec
from ..planning.finetune_plan import Choices, make_finetune_plan
from ..planning.rules import DATA, LIKE_PRETRAINED, USER
from .auto_preset import fit_finetuning, uses_amp
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FinetuneConfig, load_config, to_dict
from .loop import TrainLoop, keeps_callers_rng
from .memory import check_training_fits
from .run_folder import RunFolder
from .segmentation_task import SegmentationTask, validate_cases


@keeps_callers_rng
def finetune(images: Sequence[str], labels: Sequence[str], out: str | Path, backbone: str = "resenc:tiny",
             preset: Optional[str] = "auto", config_yaml: Optional[str] = None, overrides: Optional[Dict] = None,
             val_images: Sequence[str] = (), val_labels: Sequence[str] = (), device: str = "auto",
             resume: bool = False, overwrite: bool = False, label_names: Optional[Dict[int, str]] = None,
             channel_names: Optional[Sequence[str]] = None, sink: Optional[EventSink] = None,
             accept_licence: bool = False) -> Path:
    """Train and write the package ``out``; returns its path. See the module docstring. ``accept_licence``:
    see `resolve_backbone`."""
    sink = sink or NullSink()
    if isinstance(channel_names, str):  # one name, not its letters
        channel_names = [channel_names]
    if bool(val_images) != bool(val_labels):
        raise InputError("--val-images and --val-labels go together (one label map per validation case); give both "
                         "or neither")
    paths = RunFolder.finetune(out)
    source = resolve_backbone(backbone, accept_licence=accept_licence)
    recipe = get_recipe(source.recipe) if source.recipe else None
    auto = preset in (None, "", "auto")
    cfg = load_config(FinetuneConfig, "finetune", "quick" if auto else preset, config_yaml, overrides,
                      recipe and recipe.finetune)
    if cfg.sparse_slices:
        check_axis_name(cfg.sparse_slices)
    paths.prepare(resume, overwrite)
    dev = resolve_device(device)
    train_files = collect_cases(images, labels)
    val_files = collect_cases(val_images, val_labels) if val_images else []
    if recipe is not None:
        sink.emit("log", message=f"fine-tuning recipe {recipe.name}: {recipe.title} (settings of --config and "
                                 f"flags take precedence)")
    plan, train, val = _prepare_data(paths, train_files, val_files, source, cfg, resume, label_names, channel_names, sink)
    sink.emit("log", message=f"backbone {source.name}: {source.arch.backbone} + {source.arch.decoder} decoder; "
                             f"{len(train)} training and {len(val)} validation case(s); labels: "
                             f"{', '.join(lab.name for lab in plan.labels[1:])}")
    sink.emit("log", message=plan_summary(plan))
    if cfg.patch_size and tuple(cfg.patch_size) != tuple(plan.patch_size):
        sink.emit("log", message=f"patch {' x '.join(map(str, cfg.patch_size))} rounded up to "
                                 f"{' x '.join(map(str, plan.patch_size))}: each side a multiple of the network's "
                                 f"downsampling, at least twice it")
    torch.manual_seed(cfg.seed)  # the same seed, data and thread count give the same model
    net = _network(plan, source, dev, resume and (paths.run_dir / "checkpoint_last.pt").exists(), sink)
    if cfg.freeze_backbone:
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    if auto:
        plan = _fit(paths, plan, net, cfg, dev, resume, sink)
    est = check_training_fits(net, plan.num_channels, plan.patch_size, cfg.batch_size, dev, amp=uses_amp(cfg.loop.amp, dev))
    sink.emit("log", message=f"estimated training memory {est.total_gb:.2f} GB on {dev}")
    return _train_and_package(paths, plan, net, train, val, cfg, source, dev, resume, sink)


def plan_summary(plan: Plan) -> str:
    """One log line: spacing and patch with the rule that chose each (``medssl info --plan`` shows them all)."""
    rules = plan.provenance.get("fields", {})
    spacing = "each scan's own" if plan.spacing is None else " x ".join(f"{s:g}" for s in plan.spacing) + " mm"
    return (f"plan {plan.hash()}: spacing {spacing} ({rules.get('spacing', '?')}), patch "
            f"{' x '.join(map(str, plan.patch_size))} ({rules.get('patch_size', '?')})")


def _fit(paths: RunFolder, plan: Plan, net, cfg: FinetuneConfig, dev: torch.device, resume: bool, sink) -> Plan:
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


def _read_case(files: CaseFiles):
    channels = [read_image(c, "image") for c in files.channels]
    label = read_label_map(files.label, "label map") if files.label else None
    return channels, label


def _prepare_data(paths: RunFolder, train_files, val_files, source: BackboneSource, cfg: FinetuneConfig,
                  resume: bool, label_names, channel_names, sink: EventSink):
    """Read, settle labels and plan, preprocess. On resume the stored plan is reused and inputs must match."""
    inputs = [p for f in train_files + val_files for p in f.channels + [f.label or ""]]
    read = [_read_case(f) for f in train_files + val_files]
    maps: List[LabelMap] = [lab for _, lab in read]
    if resume:
        plan = Plan.load(paths.plan)
        paths.check_same_inputs(inputs)
    else:
        base = _base_if_compatible(list(source.plan_defaults.labels) or None, maps)
        labels = label_set(maps, label_names, base)
        rule = LIKE_PRETRAINED if base is not None else USER if label_names else DATA
        plan = make_finetune_plan(read, labels, rule, source.arch, source.plan_defaults, plan_choices(cfg),
                                  channel_names, {"backbone": source.name},
                                  LIKE_PRETRAINED if source.init_weights is not None else USER)
    cases = [_to_case(ch, lab, plan, f, cfg.sparse_slices, sink) for (ch, lab), f in zip(read, train_files + val_files)]
    if not resume:  # only once every input has been checked: a bad input leaves nothing behind
        _write_run_files(paths, plan, cfg, inputs, source)
    train, val = _split(cases[: len(train_files)], cases[len(train_files):], cfg, sink)
    return plan, train, val


def plan_choices(cfg: FinetuneConfig) -> Choices:
    """The plan fields the run configuration sets (test-time mirroring: the axes mirrored in training, as
    nnU-Net does; none when mirroring was off)."""
    mirror = tuple(int(a) for a in cfg.augment.mirror_axes) if cfg.augment.p_mirror > 0 else ()
    window = SlidingWindowSpec(overlap=cfg.overlap, sw_batch_size=cfg.sw_batch_size, mirror_axes=mirror)
    return Choices(cfg.spacing, cfg.orientation, cfg.normalization, cfg.patch_size, window)


def _base_if_compatible(base, maps):
    """Continue with the parent package's labels unless the new label maps name other structures."""
    if base is None:
        return None
    names = {lab.name.lower() for lab in base}
    if all(m.segments is None or all(s.name.lower() in names for s in m.segments) for m in maps):
        return base
    return None


def _to_case(channels, label: LabelMap, plan: Plan, files: CaseFiles, sparse: Optional[str] = None,
             sink: Optional[EventSink] = None) -> Case:
    table = value_lookup(label, plan.labels, str(files.label), plan.ignore_label)
    if not same_grid(Grid.of(channels[0]), Grid.of(label.image)):
        raise InputError(f"label map {files.label} is on a different grid than its image {files.channels[0]} (size "
                         f"{label.image.GetSize()} vs {channels[0].GetSize()}, or spacing/origin/direction differ); "
                         f"resample it onto the image first")
    indices, info = to_class_indices(label, table), None
    if sparse:  # unpainted slices -> ignore label (`medssl.data.sparse`)
        indices, info = make_sparse(indices, sparse, target_grid(channels[0], plan.orientation, plan.spacing),
                                    plan.ignore_label)
        (sink or NullSink()).emit("log", message=info.describe(files.name))
    pre = preprocess(channels, plan, indices, names=files.channels)
    lab = pre.label.astype(np.uint8)
    is_sparse = info is not None and info.axis is not None
    return Case(pre.image, lab, files.name, labelled=labelled_index(lab, plan.ignore_label) if is_sparse else None,
                ignore=plan.ignore_label)


def _split(train: List[Case], val: List[Case], cfg: FinetuneConfig, sink: EventSink):
    if val:
        return train, val
    if len(train) < 2:
        sink.emit("log", message="one labelled case only: validation Dice is measured on the training case")
        return train, list(train)
    order = np.random.default_rng(cfg.seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * cfg.val_fraction)))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]


def _write_run_files(paths: RunFolder, plan: Plan, cfg: FinetuneConfig, inputs: List[str], source: BackboneSource
                     ) -> None:
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.config, json.dumps({"config": to_dict(cfg), "backbone": source.name}, indent=1, default=str))
    paths.write_inputs(inputs)
    write_text_atomic(paths.plan, plan.to_json())


def _network(plan: Plan, source: BackboneSource, dev: torch.device, resuming: bool, sink: EventSink):
    """The plan's network with the source's weights; random values are drawn only for what they do not fill
    (`models.fresh_init`; resuming: none, the checkpoint holds every weight)."""
    if resuming:
        return build_from_plan(plan, initialise=False).to(dev)
    if source.init_weights is None:
        return build_from_plan(plan).to(dev)
    net, skipped = build_fresh_only(lambda: build_from_plan(plan), source.loaded_keys) if source.loaded_keys \
        else (build_from_plan(plan), set())
    report = source.init_weights(net.to(dev))
    if not skipped <= set(report.loaded):  # the structure's match promised more than the load did
        net = build_from_plan(plan).to(dev)
        report = source.init_weights(net)
    sink.emit("log", message=f"pretrained weights from {source.name}: {report.summary()}")
    return net


def _train_and_package(paths: RunFolder, plan: Plan, net, train, val, cfg: FinetuneConfig, source: BackboneSource,
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
    meta = _package_metadata(paths.out.name, plan, cfg, source, result, train, val)
    if source.recipe:
        meta["recipe"] = get_recipe(source.recipe).record()
    save_package(paths.out, plan, net.state_dict(), meta)
    sink.emit("done", task="finetune", package=str(paths.out), best_mean_dice=result.best_metric,
              best_step=result.best_step, steps=result.step)
    return paths.out


def _package_metadata(name: str, plan: Plan, cfg: FinetuneConfig, source: BackboneSource, result, train, val
                      ) -> Dict:
    """``name``: the model's name (the package folder's name as trained; MedSSL Segment shows it in node names)."""
    return {
        "name": name,
        "licence": source.licence or "same as the training data and backbone",
        "provenance": {**source.provenance, "backbone": source.name, "steps": result.step,
                       "best_step": result.best_step, "best_mean_dice": result.best_metric,
                       "train_cases": [c.name for c in train], "val_cases": [c.name for c in val],
                       "plan_hash": plan.hash()},
        "plan_fields": plan.provenance.get("fields", {}),
        "training": to_dict(cfg),
    }
