"""Argument helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional

from ..errors import InputError


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="progress display: a bar with ETA (default), JSON lines on stdout (for 3D Slicer), or none")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda or cuda:N")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a number of at least 1")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a value in [0, 1), e.g. 0.5")
    return value


def read_label_names(path: Optional[str]) -> Optional[Dict[int, str]]:
    """``{"1": "liver", "2": "spleen"}`` from a JSON file."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
        return {int(k): str(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"--label-names {path} must be a JSON object like {{\"1\": \"liver\"}} ({exc})") from None
