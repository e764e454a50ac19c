"""``medssl info``: versions, torch, CUDA and GPU memory, the CPU's vector units with what ``--runtime auto`` and
``amp: auto`` pick on it, cache folder (for bug reports and Slicer);
``medssl info --plan PKG``: the plan of a model package, export or run, each field with the rule that chose it."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="versions, devices and folders")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plan", metavar="PKG", help="show the plan of a model package, export, run folder or plan.json, "
                                                "each field with the rule that chose it (user, like_pretrained, data)")
    return p


def collect() -> dict:
    import torch

    from ..home import medssl_home
    from ..hub.package import versions
    from ..inference.devices import gpu_summary
    from ..inference.runtimes import choose_runtime, cpu_description
    from ..train.loop import uses_amp

    cpu = torch.device("cpu")
    predict = choose_runtime("auto", cpu)
    return {**versions(), "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
            "gpus": gpu_summary(), "cpu": cpu_description(), "cpu_threads": torch.get_num_threads(),
            "cpu_predict": f"{predict.runtime} {predict.precision} ({predict.reason})",
            "cpu_training": "bfloat16 autocast" if uses_amp("auto", cpu) else "float32",
            "medssl_home": str(medssl_home())}


PLAN_FIELDS = ("spacing", "orientation", "normalization", "patch_size", "channels", "labels", "architecture")


def plan_file(spec: str):
    """``plan.json`` of a package/export folder, a run folder (``training/plan.json``, ``export/plan.json``) or
    the file itself."""
    from pathlib import Path

    from ..errors import InputError

    p = Path(spec)
    for candidate in (p, p / "plan.json", p / "export" / "plan.json", p / "training" / "plan.json"):
        if candidate.is_file():
            return candidate
    raise InputError(f"--plan {spec}: no plan.json there; give a model package, an export, a run folder or a plan file")


def plan_rows(spec: str) -> dict:
    """Field -> {value, rule} for ``--plan`` (rule ``unrecorded`` for plans written before rules were recorded)."""
    from ..plan import Plan

    plan = Plan.load(plan_file(spec))
    d, rules = plan.to_dict(), plan.provenance.get("fields", {})
    rows = {name: {"value": d[name], "rule": rules.get(name, "unrecorded")} for name in PLAN_FIELDS}
    return {"plan_hash": plan.hash(), "fields": rows, "provenance": {k: v for k, v in plan.provenance.items()
                                                                     if k != "fields"}}


def _brief(name: str, value) -> str:
    if name == "normalization":
        return ", ".join(n["scheme"] for n in value)
    if name in ("channels", "labels"):
        return ", ".join(f"{c['name']}" + (f" ({c['modality']})" if "modality" in c else "") for c in value) or "none"
    if name == "architecture":
        return f"{value['backbone']} + {value['decoder']}"
    return "native" if value is None else str(value)


def show_plan(spec: str, as_json: bool) -> int:
    import json

    rows = plan_rows(spec)
    if as_json:
        print(json.dumps(rows))
        return 0
    for name, row in rows["fields"].items():
        print(f"{name:15s} {_brief(name, row['value'])}   [{row['rule']}]")
    print(f"{'plan hash':15s} {rows['plan_hash']}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return show_plan(args.plan, args.json)
    info = collect()
    if args.json:
        print(json.dumps(info))
        return 0
    for key, value in info.items():
        if key == "gpus":
            value = "; ".join(f"{g['name']} ({g['memory_total_gb']} GB)" for g in value) or "none"
        print(f"{key:15s} {value}")
    return 0
