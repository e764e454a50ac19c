"""ProcessRunner and event parsing against real subprocesses (the fake and the real medssl CLI)."""

import json
import os
import sys
import time

import pytest

pytest.importorskip("slicer")

from medssl_slicer_helpers import processGone, waitFor  # noqa: E402

from MedSSLLib.events import ProgressState, formatDuration, parseEventLine  # noqa: E402
from MedSSLLib.process import ProcessRunner  # noqa: E402

EMITTER = """
import json, sys, time
def emit(**e): print(json.dumps(e), flush=True)
emit(event="start", task="finetune", total=4, initial=0)
print("plain text line", flush=True)
for s in range(1, 5):
    emit(event="step", step=s, total=4, loss=1.0 / s, lr=0.01, eta_s=4 - s)
emit(event="validation", step=4, dice={"liver": 0.5, "spleen": 0.7}, mean_dice=0.6)
print("a warning", file=sys.stderr, flush=True)
emit(event="done", task="finetune", package="pkg")
"""


def test_parse_event_line_accepts_only_medssl_events():
    assert parseEventLine('{"event": "step", "step": 3, "total": 10}')["step"] == 3
    assert parseEventLine("plain text") is None
    assert parseEventLine('{"event": "unknown"}') is None
    assert parseEventLine('{"not": "an event"}') is None
    assert parseEventLine("{broken json") is None


def test_progress_state_predict_stages_and_eta():
    state = ProgressState()
    state.update({"event": "start", "task": "predict", "total": 1})
    state.update({"event": "progress", "stage": "preprocess", "done": 1, "total": 1})
    assert state.percent == 5
    state.update({"event": "progress", "stage": "sliding_window", "done": 5, "total": 10, "eta_s": 65})
    assert state.percent == 50 and state.etaSeconds == 65
    assert state.statusText() == "Segmenting, 1 min 05 s left"
    state.update({"event": "done", "task": "predict"})
    assert state.percent == 100 and state.result["task"] == "predict"


def test_progress_state_training_curves_and_resume_offset():
    state = ProgressState()
    state.update({"event": "start", "task": "finetune", "total": 200, "initial": 50})
    assert state.percent == 25
    state.update({"event": "step", "step": 100, "total": 200, "loss": 0.5, "eta_s": None})
    state.update({"event": "validation", "step": 100, "dice": {"liver": 0.8, "bad": None}, "mean_dice": 0.8})
    state.update({"event": "error", "message": "out of memory", "exit_code": 2})
    assert state.losses == [(100, 0.5)] and state.validations == [(100, 0.8, {"liver": 0.8})]
    assert state.etaSeconds is None and state.errorMessage == "out of memory"
    assert state.statusText() == "Training: step 100/200, loss 0.500, Dice 0.80"


def test_format_duration():
    assert formatDuration(3725) == "1 h 02 min"
    assert formatDuration(42.4) == "42 s"
    assert formatDuration(None) == "" and formatDuration(float("nan")) == ""


def test_runner_parses_events_and_logs_from_a_real_subprocess():
    events, logs, finished = [], [], []
    runner = ProcessRunner(events.append, logs.append, finished.append)
    runner.start([sys.executable, "-c", EMITTER])
    result = runner.wait(timeout=30)
    assert result.ok and finished == [result]
    assert [e["event"] for e in events] == ["start", "step", "step", "step", "step", "validation", "done"]
    assert sorted(logs) == ["a warning", "plain text line"]  # stdout and stderr are read on two threads
    state = ProgressState()
    for event in events:
        state.update(event)
    assert state.percent == 100 and state.losses[-1] == (4, 0.25) and state.latestDice() == 0.6


def test_runner_poll_is_driven_by_a_scheduler():
    """pollEvery works with a QTimer.singleShot-like scheduler; callbacks run on the polling thread."""
    queue, finished = [], []
    runner = ProcessRunner(onFinished=finished.append)
    runner.start([sys.executable, "-c", "print('hello')"])
    runner.pollEvery(lambda ms, fn: queue.append(fn), intervalMs=10)
    assert waitFor(lambda: bool(finished), timeout=20, poll=lambda: queue and queue.pop(0)())
    assert finished[0].ok and not queue


def test_polling_survives_a_failing_callback():
    def broken(event):
        raise ValueError("GUI update failed")

    queue, finished = [], []
    runner = ProcessRunner(onEvent=broken, onFinished=finished.append)
    runner.start([sys.executable, "-c", EMITTER])
    runner.pollEvery(lambda ms, fn: queue.append(fn), intervalMs=10)
    assert waitFor(lambda: bool(finished), timeout=20, poll=lambda: queue and queue.pop(0)())
    assert finished[0].ok


def test_runner_surfaces_the_one_line_error_of_a_failing_command(tmp_path):
    script = "import sys; print('working'); print('Traceback...', file=sys.stderr); " \
             "print('error: label map x.nii.gz holds values [9]', file=sys.stderr); sys.exit(2)"
    runner = ProcessRunner()
    runner.start([sys.executable, "-c", script])
    result = runner.wait(timeout=30)
    assert result.returnCode == 2 and not result.cancelled and not result.ok
    assert result.errorMessage == "label map x.nii.gz holds values [9]"


def test_runner_reports_a_crash_without_error_line():
    runner = ProcessRunner()
    runner.start([sys.executable, "-c", "raise SystemExit('fatal: disk full')"])
    result = runner.wait(timeout=30)
    assert result.returnCode == 1 and result.errorMessage == "fatal: disk full"


def test_runner_start_failure_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot start"):
        ProcessRunner().start([str(tmp_path / "no-such-program")])


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """The child of the command (like PythonSlicer's python-real, or data-loader workers) dies too."""
    pids = tmp_path / "pids.json"
    script = (f"import json, subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pids)!r}, 'w').write(json.dumps([c.pid]))\n"
              f"print(json.dumps({{'event': 'start', 'task': 'predict', 'total': 1}}), flush=True)\n"
              f"time.sleep(60)\n")
    events = []
    runner = ProcessRunner(onEvent=events.append)
    runner.start([sys.executable, "-c", script])
    assert waitFor(lambda: bool(events) and pids.exists(), timeout=20, poll=runner.poll)
    child = json.loads(pids.read_text())[0]
    started = time.monotonic()
    runner.cancel()
    result = runner.wait(timeout=20)
    assert result.cancelled and result.errorMessage is None
    assert processGone(runner.proc.pid) and processGone(child)
    assert time.monotonic() - started < 10


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX signals")
def test_cancel_escalates_to_kill_when_terminate_is_ignored():
    script = "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    logs = []
    runner = ProcessRunner(onLog=logs.append)
    runner.CANCEL_GRACE_S = 0.3
    runner.start([sys.executable, "-c", script])
    assert waitFor(lambda: logs == ["ready"], timeout=20, poll=runner.poll)
    runner.cancel()
    result = runner.wait(timeout=20)
    assert result.cancelled and processGone(runner.proc.pid)


def test_real_medssl_failure_is_one_line(realMedssl, tmp_path):
    """``medssl predict`` with a missing package: exit 2, the CLI's message, reported once."""
    events, finished = [], []
    runner = ProcessRunner(onEvent=events.append, onFinished=finished.append)
    args = realMedssl.args("predict", "--model", str(tmp_path / "missing"), "--input", str(tmp_path / "x.nrrd"),
                           "--output", str(tmp_path / "out.seg.nrrd"), "--progress", "json")
    runner.start(args, env=realMedssl.env)
    result = runner.wait(timeout=120)
    assert result.returnCode == 2 and len(finished) == 1
    assert "missing does not exist" in result.errorMessage and "\n" not in result.errorMessage
    assert [e["event"] for e in events] == ["error"]


def tinyTrainingCase(folder):
    """A 24^3 image and a two-class label map (files medssl finetune reads)."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 24, 24)).astype("float32")
    labels = np.zeros((24, 24, 24), "uint8")
    labels[6:18, 6:18, 6:18] = 1
    image[labels == 1] += 3.0
    paths = folder / "image.nii.gz", folder / "labels.nii.gz"
    for array, path in zip((image, labels), paths):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return paths


def test_windows_cancel_is_graceful_through_the_cancel_file(realMedssl, tmp_path, monkeypatch):
    """The Windows path (no SIGTERM there), run here: Cancel creates the cancel file, real medssl training
    stops at the next step boundary with its checkpoint written and exit code 130, long before any kill."""
    from MedSSLLib import process

    monkeypatch.setattr(process, "GRACEFUL_BY_FILE", True)
    kills, kill = [], process.killProcessTree

    def recordedKill(pid, hard=True):
        kills.append(hard)
        kill(pid, hard)

    monkeypatch.setattr(process, "killProcessTree", recordedKill)
    image, labels = tinyTrainingCase(tmp_path)
    out = tmp_path / "model"
    events, logs = [], []
    runner = ProcessRunner(onEvent=events.append, onLog=logs.append)
    runner.CANCEL_GRACE_S = 90
    runner.start(realMedssl.args("finetune", "--images", str(image), "--labels", str(labels), "--out", str(out),
                                 "--backbone", "resenc:test", "--patch-size", "16", "16", "16", "--steps", "5000",
                                 "--device", "cpu", "--progress", "json"), env=realMedssl.env)
    assert waitFor(lambda: any(e["event"] == "step" for e in events), timeout=300, poll=runner.poll), logs
    cancelledAt = len(events)
    runner.cancel()
    assert runner.cancelFile.exists()
    result = runner.wait(timeout=60)
    assert result.cancelled and result.returnCode == 130 and kills == [True]  # the kill only sweeps up after exit
    after = [e for e in events[cancelledAt:] if e["event"] in ("checkpoint", "error")]
    assert [e["event"] for e in after] == ["checkpoint", "error"] and "checkpoint is saved" in after[1]["message"]
    assert not runner.cancelFile.exists()


def test_the_child_runs_in_utf8_mode_with_utf8_pipes(tmp_path):
    """Whatever the parent's locale (cp1252 on a Windows Slicer), the child writes what the reader decodes."""
    script = ("import os, sys; print(sys.flags.utf8_mode, sys.stdout.encoding, sys.stderr.encoding); "
              "print('Žluťoučký kůň, 肝臓 ✓', flush=True)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUTF8", "PYTHONIOENCODING")}
    env["LC_ALL"] = "C.UTF-8"
    logs = []
    runner = ProcessRunner(onLog=logs.append)
    runner.start([sys.executable, "-c", script], env=env)
    assert runner.wait(timeout=30).ok
    assert logs == ["1 utf-8 utf-8", "Žluťoučký kůň, 肝臓 ✓"]
