"""The run folder of ``medssl finetune`` and ``medssl pretrain``: ``<out>/training/`` holds the run state (plan,
configuration, inputs digest, checkpoints) beside the result the run writes (the model package ``<out>``
itself, or the backbone export ``<out>/export``).

One rule set for both: a run that wrote its plan can be resumed (``--resume``, with the same inputs) or
replaced (``--overwrite``); a run killed before its plan was written holds nothing worth keeping; a result
whose replacement a kill interrupted is put back first (`medssl.io.dir_swap.recover_dir`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError
from ..io.atomic import check_replaceable, ensure_writable_dir, write_text_atomic
from ..io.dir_swap import recover_dir

RESULT_FILES = ("plan.json", "weights.safetensors", "backbone.safetensors")


@dataclass(frozen=True)
class RunFolder:
    """``out``: the folder the user named; ``result``: what the finished run writes; ``kind`` names the run
    in messages ("" for fine-tuning, "pretraining ")."""

    out: Path
    result: Path
    kind: str

    @classmethod
    def finetune(cls, out: str | Path) -> "RunFolder":
        return cls(Path(out), Path(out), "")

    @classmethod
    def pretrain(cls, out: str | Path) -> "RunFolder":
        return cls(Path(out), Path(out) / "export", "pretraining ")

    @property
    def run_dir(self) -> Path:
        return self.out / "training"

    def file(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def plan(self) -> Path:
        return self.file("plan.json")

    @property
    def inputs(self) -> Path:
        return self.file("inputs.json")

    @property
    def config(self) -> Path:
        return self.file("config.json")

    @property
    def best(self) -> Path:
        return self.file("model_best.pt")

    def has_result(self) -> bool:
        return any((self.result / name).exists() for name in RESULT_FILES)

    def has_progress(self) -> bool:
        """Whether the run saved a training state (``checkpoint_last.pt``, what ``--resume`` continues from). A run
        folder without one (a run that stopped before its first checkpoint, e.g. on a setting found wrong once
        training began) holds nothing a new run would lose."""
        return self.file("checkpoint_last.pt").exists()

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check ``--resume``/``--overwrite`` against what the folder holds; a new run starts from an empty
        ``training/`` (an existing result is replaced only when the new one is complete, or removed now when it
        is a sub-folder)."""
        if resume and overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it; give one of them")
        ensure_writable_dir(self.out.parent, "output folder")
        check_replaceable(self.result, "--out")  # before any work: a folder of the user's is never replaced
        if self.out.exists():
            ensure_writable_dir(self.out, "output folder")
        recover_dir(self.result)
        if resume:
            if not self.plan.exists():
                raise InputError(f"--resume: {self.out} holds no interrupted {self.kind}run (no training/plan.json); "
                                 f"start a new run without --resume")
            return
        if (self.has_result() or self.has_progress()) and not overwrite:
            raise InputError(f"{self.out} already holds a model or a run; pass --resume to continue the run, "
                             f"--overwrite to replace it, or choose another --out")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.result != self.out:
            shutil.rmtree(self.result, ignore_errors=True)

    def write_inputs(self, files: Sequence[str]) -> None:
        write_text_atomic(self.inputs, json.dumps({"digest": inputs_digest(files), "files": list(files)}, indent=1))

    def check_same_inputs(self, files: Sequence[str]) -> None:
        """``--resume`` continues only with the files the run started with."""
        saved: Optional[str] = json.loads(self.inputs.read_text()).get("digest") if self.inputs.exists() else None
        if saved != inputs_digest(files):
            raise InputError(f"--resume: the input files differ from those the run in {self.out} started with; give "
                             f"the same images (and labels), or start a new run with another --out")


def inputs_digest(files: Sequence[str]) -> str:
    """sha256 over each input's resolved path, size and modification time (``path::member`` names count by their
    file and member). The same files named another way (relative, ``./``, absolute) match; a file replaced by
    another of the same name and size does not (matching on the name as typed and the size had refused the first
    and accepted the second)."""
    h = hashlib.sha256()
    for f in files:
        name, _, member = str(f).partition("::")
        path = Path(name).resolve()
        stat = path.stat() if path.is_file() else None
        h.update(f"{path}|{member}|{stat.st_size if stat else 0}|{stat.st_mtime_ns if stat else 0}".encode())
    return h.hexdigest()[:16]
