"""Self-supervised pretraining on unlabelled volumes, exported as a backbone that ``medssl finetune`` accepts.

    from medssl.train.pretrain import pretrain
    pretrain("mae3d", images=["scans/"], out="run_mae", preset="mae3d_cpu", overrides={"loop": {"steps": 500}})

Steps: collect the volumes -> fingerprint them and plan (`medssl.planning`; rank 0, broadcast to the other
ranks) -> preprocess into the on-disk cache keyed by the plan hash -> build the method (`medssl.ssl.METHODS`)
and check that its export loads into the plan's network -> train with the one `TrainLoop` (AMP, clipping,
accumulation, EMA hooks, NaN guard, atomic checkpoints, exact resume, DDP under ``torchrun``) -> rank 0
writes ``<out>/export`` (`medssl.hub.ssl_export`). The run state lives in ``<out>/training/``.

Under ``torchrun --nproc_per_node N [--nnodes M ...]`` the same call runs DistributedDataParallel: NCCL on
GPUs, gloo on CPUs; rank ``r`` trains on batches ``i * N + r`` (distributed sampling by construction); only
rank 0 writes the run files, checkpoints and the export.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..data.volumes import VolumeSet
from ..errors import OOM_ADVICE, InputError
from ..events import EventSink, NullSink
from ..hub.backbone_source import default_decoder
from ..hub.ssl_export import save_export
from ..inference.devices import resolve_device
from ..io.atomic import write_text_atomic
from ..io.settings import require, require_fields, require_orientation
from ..io.volume_io import find_images
from ..models import resolve_arch
from ..plan import Plan
from ..planning.cache import cached_volumes
from ..planning.fingerprint import fingerprint_dataset
from ..planning.planner import plan_pretraining
from ..ssl import METHODS, SSLMethod, build_method
from ..ssl.base import method_config
from ..ssl.batches import StepBatches
from .config import CONFIG_DIR, load_config, to_dict
from .auto_preset import fit_pretraining, restore_fitted, uses_amp
from .distributed import DistContext
from .long_run import LongRunNote
from .loop import LoopConfig, LoopResult, TrainLoop, keeps_callers_rng
from .memory import check_training_fits
from .run_folder import RunFolder


def _default_normalization() -> Dict[str, Dict[str, Any]]:
    return {"CT": {"scheme": "ct_window", "params": {"lower": -175.0, "upper": 250.0, "out": [0.0, 1.0]}},
            "MR": {"scheme": "zscore", "params": {"per_image": True}}}


@dataclass
class PretrainConfig:
    """Pretraining settings; the ``method`` section is validated by the method's own ``Config``."""

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1000, lr=1e-3, checkpoint_every=200))
    backbone: str = "resenc:L"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    decoder: Optional[str] = None  # default: the backbone's usual decoder
    batch_size: int = 2
    patch_size: List[int] = field(default_factory=lambda: [96, 96, 96])
    spacing: Any = "auto"  # auto | native | number | [i, j, k]
    orientation: str = "RAS"
    normalization: Dict[str, Dict[str, Any]] = field(default_factory=_default_normalization)
    cache_dir: Optional[str] = None
    seed: int = 0
    method: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_fields(self, positive=("batch_size", "patch_size"))
        require(len(self.patch_size) == 3, "patch_size", self.patch_size, "three sides, e.g. [96, 96, 96]")
        require_orientation(self.orientation)
        require(self.seed >= 0, "seed", self.seed, "a whole number of 0 or more")


def preset_name(method: str, preset: Optional[str]) -> str:
    """``None`` -> the method's published recipe (``<method>``); ``cpu`` -> ``<method>_cpu``."""
    METHODS.get(method)
    name = method if preset in (None, "", "recipe", "auto") else preset if preset.startswith(method) else f"{method}_{preset}"
    if not (CONFIG_DIR / "pretrain" / f"{name}.yaml").exists():
        extra = sorted(p.stem[len(method) + 1:] for p in (CONFIG_DIR / "pretrain").glob(f"{method}_*.yaml"))
        raise InputError(f"no pretraining preset {preset!r} for {method}; --preset takes auto, recipe"
                         f"{''.join(', ' + e for e in extra)}")
    return name


def collect_volumes(entries: Sequence[str]) -> List[str]:
    """Image files from files, folders (every image inside) and comma-joined channels (each its own volume)."""
    out: List[str] = []
    for entry in entries:
        for part in [p for p in str(entry).split(",") if p]:
            path = Path(part.split("::")[0])
            if path.is_dir() and find_images(path):
                out.extend(str(f) for f in find_images(path))
            elif path.exists():
                out.append(part)
            else:
                raise InputError(f"--images: {part} does not exist; give image files or folders of images")
    if not out:
        raise InputError("no images to pretrain on; pass --images FILE [FILE ...] or a folder of images")
    return out


def _say_what_one_normalisation_means(fp, plan: Plan, sink: EventSink) -> None:
    """One plan normalises every scan alike (the majority modality's scheme): say so when the scans are of several
    modalities, and name scans smaller than the crop (mostly padding)."""
    counts = fp.summary()["modalities"]
    if len(counts) > 1:
        listed = ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))
        sink.emit("log", message=f"the scans look like several modalities ({listed}); all are normalised as "
                                 f"{fp.modality} ({plan.normalization[0].scheme}): pretrain each modality on its own "
                                 f"if that is not what you want")
    spacing = plan.spacing
    for v in fp.volumes:
        extent = [n * s for n, s in zip(v.size, v.spacing)]
        voxels = [e / t for e, t in zip(extent, spacing or v.spacing)]
        if any(n < 0.5 * p for n, p in zip(voxels, plan.patch_size)):
            sink.emit("log", message=f"{v.path}: {' x '.join(f'{n:.0f}' for n in voxels)} voxels at the plan's "
                                     f"spacing, under half the {' x '.join(map(str, plan.patch_size))} crop: its "
                                     f"crops are mostly padding")


def _make_plan(paths: RunFolder, files: List[str], cfg: PretrainConfig, method: str, resume: bool,
               overwrite: bool, sink: EventSink) -> Plan:
    """Rank 0: the stored plan (resume) or a new one from the data's fingerprint (written to the run folder)."""
    paths.prepare(resume, overwrite)
    if resume:
        paths.check_same_inputs(files)
        stored = json.loads(paths.config.read_text()).get("method") if paths.config.is_file() else method
        if stored != method:
            raise InputError(f"--resume: {paths.out} is a {stored} run; resume it with --method {stored}")
        return Plan.load(paths.plan)
    sink.emit("log", message=f"fingerprinting {len(files)} volume(s)")
    fp = fingerprint_dataset(files, cfg.orientation, cfg.seed)
    name, _, preset = cfg.backbone.partition(":")
    kwargs = {**({"preset": preset} if preset else {}), **cfg.backbone_kwargs}
    arch = resolve_arch(name, cfg.decoder or default_decoder(name), kwargs)
    plan = plan_pretraining(fp, arch, cfg.spacing, cfg.normalization, cfg.patch_size, method)
    _say_what_one_normalisation_means(fp, plan, sink)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(paths.file("fingerprint.json"), json.dumps(fp.to_dict(), indent=1))
    write_text_atomic(paths.file("config.json"), json.dumps({"method": method, "config": to_dict(cfg)}, indent=1,
                                                            default=str))
    paths.write_inputs(files)
    write_text_atomic(paths.plan, plan.to_json())
    return plan


def _shared_plan(dist: DistContext, make) -> Plan:
    """``make()`` on rank 0, broadcast to every rank (an error on rank 0 is re-raised everywhere)."""
    if not dist.active:
        return make()
    import torch.distributed as tdist

    box: List[Any] = [None]
    if dist.is_main:
        try:
            box = [("ok", make().to_json())]
        except InputError as exc:
            box = [("error", str(exc))]
    tdist.broadcast_object_list(box, src=0)
    status, payload = box[0]
    if status != "ok":
        raise InputError(payload)
    return Plan.from_dict(json.loads(payload), "broadcast plan")


def _volumes(files: List[str], plan: Plan, cfg: PretrainConfig, dist: DistContext, sink: EventSink) -> VolumeSet:
    """The cached volumes; the first rank of each node preprocesses, the others wait and read."""
    builder = dist.local_rank == 0
    volumes = cached_volumes(files, plan, cfg.cache_dir, sink, build=True) if builder else None
    dist.barrier()
    return volumes if volumes is not None else cached_volumes(files, plan, cfg.cache_dir, build=False)


def check_export(method: SSLMethod, plan: Plan) -> torch.nn.Module:
    """Fail before training when the method's export would not load into the plan's network (nnssl's
    ``verify_adaptation_plans``); returns that network with the export loaded (random values drawn only for
    the rest, `build_fresh_only`, from a forked generator: the training's random stream does not depend on it)."""
    from ..hub.matching import keys_loaded, shapes_of
    from ..hub.ssl_export import load_into
    from ..models import build_network
    from ..models.fresh_init import build_fresh_only

    state, family = method.export_state(), plan.architecture.backbone
    shapes = shapes_of(state)
    with torch.random.fork_rng(devices=[]):  # the check's random values are not the training's
        net, _ = build_fresh_only(lambda: build_network(plan.architecture, plan.num_channels, 2),
                                  lambda structure: keys_loaded(structure, shapes, family))
    load_into(state, net, f"{family} export", family)
    return net


def check_memory(net: torch.nn.Module, ssl: SSLMethod, plan: Plan, cfg: PretrainConfig, dev: torch.device,
                 sink: EventSink, auto: bool = True) -> None:
    """The fine-tuning memory estimate (`check_training_fits`) for the plan's network (or the method's
    `SSLMethod.activation_network`) on ``batch_size`` volumes, each as many voxels as the method passes through it
    (`SSLMethod.forward_voxels`: VoCo's 3 x 3 bases and 2 crops, DINO's global and local crops; the estimate
    `auto_preset` fits), with the optimiser holding every trained parameter of the method (network, heads; the EMA
    teacher: its weights only). Counting one patch instead said 5.96 GB for a VoCo run that took 17.0 GB (auto's
    estimate: 17.4), and let ``--preset recipe`` (34 GB) start on a 23 GB machine. Without ``auto`` (another
    preset was asked for) the refusal names ``--preset auto`` first."""
    amp = uses_amp(cfg.loop.amp, dev)
    probed, channels = ssl.memory_probe(lambda: net, plan.num_channels)
    est = check_training_fits(probed, channels, plan.patch_size, cfg.batch_size, dev, amp, optimised=ssl,
                              advice=OOM_ADVICE["pretrain"] if auto else "use --preset auto (the default: the "
                              "recipe scaled down to fit), or " + OOM_ADVICE["pretrain"].removeprefix("use "),
                              voxels_per_sample=ssl.forward_voxels())
    sink.emit("log", message=f"estimated training memory {est.total_gb:.2f} GB on {dev}")


@keeps_callers_rng
def pretrain(method: str, images: Sequence[str], out: str | Path, backbone: Optional[str] = None,
             preset: Optional[str] = None, config_yaml: Optional[str] = None, overrides: Optional[Dict] = None,
             device: str = "auto", resume: bool = False, overwrite: bool = False,
             sink: Optional[EventSink] = None) -> Path:
    """Pretrain and write ``<out>/export``; returns that folder. See the module docstring."""
    dist = DistContext.from_env(device)
    sink = (sink or NullSink()) if dist.is_main else NullSink()
    auto = preset in (None, "", "auto")
    name = preset_name(method, None if auto else preset)
    cfg = load_config(PretrainConfig, "pretrain", name, config_yaml, overrides)
    method_config(method, cfg.method)  # the method's settings checked before any run file is written
    cfg.backbone = backbone or cfg.backbone
    paths = RunFolder.pretrain(out)
    files = collect_volumes(images)
    if auto:
        cfg = _fit(cfg, method, _device(device, dist), paths, resume, sink)
    plan = _shared_plan(dist, lambda: _make_plan(paths, files, cfg, method, resume, overwrite, sink))
    sink.emit("log", message=f"{method} on {plan.architecture.backbone}: spacing {plan.spacing or 'native'}, "
                             f"normalisation {plan.normalization[0].scheme}, plan {plan.hash()}")
    volumes = _volumes(files, plan, cfg, dist, sink)
    torch.manual_seed(cfg.seed)
    ssl = build_method(method, plan.architecture, cfg.method, plan.patch_size)
    net = check_export(ssl, plan)
    dev = _device(device, dist)
    check_memory(net, ssl, plan, cfg, dev, sink, auto)
    del net
    note = LongRunNote(sink, dev.type, _long_run_advice(method, name))
    result = _train(ssl.to(dev), volumes, cfg, paths, dev, dist, resume, sink, note)
    if dist.is_main:
        _export(paths, plan, ssl, method, result, dist)
        sink.emit("done", task="pretrain", export=str(paths.result), steps=result.step,
                  data_wait=result.data_wait_fraction, **{k: v for k, v in result.last_losses.items() if k == "loss"})
    dist.barrier()
    dist.close()
    return paths.result


def _fit(cfg: PretrainConfig, method: str, dev: torch.device, paths: RunFolder, resume: bool,
         sink: EventSink) -> PretrainConfig:
    """``--preset auto`` (`auto_preset.fit_pretraining`); a resumed run keeps the settings it started with."""
    if resume and paths.config.exists():
        return restore_fitted(cfg, json.loads(paths.config.read_text()).get("config", {}))
    cfg, note = fit_pretraining(cfg, method, dev)
    if note:
        sink.emit("log", message=note)
    return cfg


def _device(device: str, dist: DistContext) -> torch.device:
    dev = resolve_device(device)
    if dist.active and dev.type == "cuda":
        return torch.device("cuda", dist.local_rank)
    return dev


def _long_run_advice(method: str, preset: str) -> str:
    """What `LongRunNote` suggests: the method's CPU preset (described from its file), and ``--steps``."""
    cpu = f"{method}_cpu"
    if preset == cpu or not (CONFIG_DIR / "pretrain" / f"{cpu}.yaml").exists():
        return "--steps N sets a shorter run"
    small = load_config(PretrainConfig, "pretrain", cpu)
    return (f"on a machine without a GPU start with --preset cpu ({small.backbone}, {small.patch_size[0]}^3 crops, "
            f"{small.loop.steps} steps), or set a shorter run with --steps N")


def _train(ssl: SSLMethod, volumes: VolumeSet, cfg: PretrainConfig, paths: RunFolder, dev: torch.device,
           dist: DistContext, resume: bool, sink: EventSink, note: LongRunNote) -> LoopResult:
    batches = StepBatches(volumes, ssl.view_maker(), cfg.batch_size, cfg.seed)
    groups = ssl.param_groups(cfg.loop.lr, cfg.loop.weight_decay)
    loop = TrainLoop(ssl, batches, cfg.loop, paths.run_dir, dev, sink, hooks=[ssl, note], task="pretrain",
                     param_groups=groups, dist=dist)
    if resume and loop.resume():
        sink.emit("log", message=f"resumed at step {loop.step} of {cfg.loop.steps}")
    result = loop.run()
    sink.emit("log", message=f"data loading took {100 * result.data_wait_fraction:.1f} % of the step time")
    return result


def _export(paths: RunFolder, plan: Plan, ssl: SSLMethod, method: str, result: LoopResult,
            dist: DistContext) -> None:
    fingerprint = json.loads(paths.file("fingerprint.json").read_text()).get("summary", {})
    config = json.loads(paths.file("config.json").read_text()).get("config", {})
    extra = {"world_size": dist.world_size, "data_wait_fraction": result.data_wait_fraction,
             "final_losses": result.last_losses, "config": config,
             "recommended_patch_size": list(plan.patch_size)}
    save_export(paths.result, plan, ssl.export_state(), method, result.step, fingerprint, extra)
