"""A ``kill -9`` at every step of a folder swap (`atomic_dir`) is repaired by the next run: the target and its
kept run state (``training/``) are never stranded in hidden ``.name-*`` / ``.old-*`` folders, and leftovers
of killed writers are removed while a live writer's work is left alone (issue: reliability, crash safety)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from medssl.io import dir_swap
from medssl.io.atomic import atomic_dir, atomic_path
from medssl.io.dir_swap import recover_dir

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill is simulated in a forked child")


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _make_old(path: Path) -> None:
    path.mkdir()
    (path / "weights.safetensors").write_text("old weights")
    (path / "training").mkdir()
    (path / "training" / "checkpoint_last.pt").write_text("step 40")


def _write_new(path: Path, crash_at: int) -> int:
    """In a forked child, replace ``path`` by a new package keeping ``training/``, dying (``os._exit``, as
    ``kill -9``: no clean-up runs) just before the ``crash_at``-th rename/removal of the swap. Returns the
    child's exit code (0: it finished before reaching that step)."""
    pid = os.fork()
    if pid == 0:
        calls = [0]

        def dying(real):
            def step(*args, **kwargs):
                calls[0] += 1
                if calls[0] == crash_at:
                    os._exit(9)
                return real(*args, **kwargs)
            return step

        dir_swap.os.replace = dying(os.replace)
        dir_swap.shutil.rmtree = dying(shutil.rmtree)
        Path.unlink = dying(Path.unlink)
        with atomic_dir(path, keep=("training",)) as tmp:
            (tmp / "weights.safetensors").write_text("new weights")
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kill_at_every_step_of_a_folder_swap_is_recovered(tmp_path):
    crashes = 0
    for crash_at in range(1, 20):
        root = tmp_path / f"case{crash_at}"
        root.mkdir()
        pkg = root / "model"
        _make_old(pkg)
        code = _write_new(pkg, crash_at)
        if code == 0:
            break
        assert code == 9
        crashes += 1
        recover_dir(pkg)
        assert (pkg / "weights.safetensors").read_text() in ("old weights", "new weights"), crash_at
        assert (pkg / "training" / "checkpoint_last.pt").read_text() == "step 40", crash_at
        assert _hidden(root) == [], (crash_at, _hidden(root))
    assert crashes >= 6  # journal, old aside, new in, training carried, old removed, journal removed
    assert (pkg / "weights.safetensors").read_text() == "new weights" and (pkg / "training").is_dir()


def test_next_writer_repairs_before_writing(tmp_path):
    """No explicit recovery call: the next `atomic_dir` on the same target finishes the interrupted swap."""
    pkg = tmp_path / "model"
    _make_old(pkg)
    assert _write_new(pkg, 3) == 9  # after 'target -> old', before 'new -> target': the target is missing
    assert not pkg.exists() and _hidden(tmp_path)
    with atomic_dir(pkg, keep=("training",)) as tmp:
        (tmp / "weights.safetensors").write_text("third")
    assert (pkg / "weights.safetensors").read_text() == "third"
    assert (pkg / "training" / "checkpoint_last.pt").read_text() == "step 40"
    assert _hidden(tmp_path) == []


def test_old_folder_without_journal_is_restored_and_unfinished_folders_removed(tmp_path):
    pid = _dead_pid()
    pkg = tmp_path / "model"
    _make_old(tmp_path / f".model.old-{pid}")
    (tmp_path / f".model-{pid}-abcd_123").mkdir()  # a new folder whose writer died while filling it
    recover_dir(pkg)
    assert (pkg / "training" / "checkpoint_last.pt").read_text() == "step 40"
    assert _hidden(tmp_path) == []


def test_live_writers_work_is_left_alone(tmp_path):
    live = os.getppid()  # the pytest runner's parent: alive, and not us
    pkg = tmp_path / "model"
    _make_old(pkg)
    (tmp_path / f".model-{live}-abcd_123").mkdir()
    (tmp_path / f".model.old-{live}").mkdir()
    (tmp_path / ".model-2-extra-abcd_123").mkdir()  # another target's name pattern: not ours
    recover_dir(pkg)
    assert _hidden(tmp_path) == sorted([f".model-{live}-abcd_123", f".model.old-{live}", ".model-2-extra-abcd_123"])


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    target = tmp_path / "checkpoint_last.pt"
    stale = tmp_path / f".checkpoint_last-{dead}-abcd_123.pt"
    busy = tmp_path / f".checkpoint_last-{live}-abcd_123.pt"
    other = tmp_path / f".model_best-{dead}-abcd_123.pt"
    for p in (stale, busy, other):
        p.write_text("half a checkpoint")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert not stale.exists() and busy.exists() and other.exists()


def test_prediction_finds_a_package_whose_swap_was_killed(tmp_path, tiny_package):
    """The package folder was moved aside (``.name.old-<pid>``) when its writer died: predicting repairs it."""
    from medssl.inference.predictor import Predictor

    pkg = tmp_path / "model"
    shutil.copytree(tiny_package, tmp_path / f".model.old-{_dead_pid()}")
    predictor = Predictor.from_package(pkg, "cpu")
    assert predictor.plan.num_classes >= 2 and (pkg / "weights.safetensors").is_file()
    assert _hidden(tmp_path) == []
