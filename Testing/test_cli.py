"""The command line on real scans: fine-tune whose Dice rises, predict onto the input grid, kill + resume,
and the error contract (exit 2, one line ``error: ...``, no traceback, nothing overwritten)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from medssl_test_utils import NO_GPU, cli_in_process, run_cli, stdout_lines

from medssl.io.geometry import Grid, same_grid
from medssl.io.labels import read_label_map

FAST = ["--backbone", "resenc:test", "--patch-size", "32", "32", "32"]


def events(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write_config(path: Path, **settings) -> str:
    path.write_text(json.dumps(settings))  # JSON is valid YAML
    return str(path)


def assert_user_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_finetune_dice_rises_and_predict_lands_on_input_grid(tmp_path, kmeans_t1, kmeans_labels):
    cfg = write_config(tmp_path / "cfg.yaml", spacing=[3, 3, 3], loop={"validate_every": 5, "checkpoint_every": 20, "lr": 0.01})
    proc = run_cli("finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out", str(tmp_path / "m"),
                   *FAST, "--steps", "40", "--config", cfg, "--device", "cpu", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    ev = events(proc.stdout)
    kinds = [e["event"] for e in ev]
    assert kinds.count("validation") == 8 and kinds[-1] == "done" and "start" in kinds and "checkpoint" in kinds
    dice = [e["mean_dice"] for e in ev if e["event"] == "validation"]
    assert dice[-1] > dice[0] + 0.15 and dice[-1] > 0.25, dice
    assert set(ev[-1]) >= {"package", "best_mean_dice", "best_step"}

    out = tmp_path / "seg.seg.nrrd"
    proc = run_cli("predict", "--model", str(tmp_path / "m"), "--input", str(kmeans_t1), "--output", str(out),
                   "--uncertainty", str(tmp_path / "unc.nii.gz"), "--device", "cpu", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    image, seg = sitk.ReadImage(str(kmeans_t1)), read_label_map(out)
    assert same_grid(Grid.of(seg.image), Grid.of(image), rtol=1e-9, atol_mm=1e-9)
    assert [s.name for s in seg.segments] == [f"label_{v}" for v in range(1, 7)]
    unc = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "unc.nii.gz")))
    assert unc.shape == sitk.GetArrayViewFromImage(image).shape and 0 <= unc.min() and unc.max() <= 1
    progress = [e for e in events(proc.stdout) if e["event"] == "progress" and e["stage"] == "sliding_window"]
    assert progress[-1]["done"] == progress[-1]["total"] > 1


def test_kill_and_resume_continues_the_run(tmp_path, kmeans_t1, kmeans_labels):
    out = tmp_path / "m"
    args = ["finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out", str(out), *FAST,
            "--steps", "40", "--device", "cpu", "--progress", "json",
            "--config", write_config(tmp_path / "c.yaml", spacing=[4, 4, 4], loop={"checkpoint_every": 5})]
    proc = subprocess.Popen([sys.executable, "-m", "medssl", *args], stdout=subprocess.PIPE, text=True)
    for line in stdout_lines(proc):
        if '"checkpoint"' in line and json.loads(line)["step"] >= 10:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "weights.safetensors").exists()
    again = run_cli(*args)
    assert_user_error(again, "already holds a model or a run.*--resume")
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ev = events(resumed.stdout)
    start = next(e for e in ev if e["event"] == "start")
    assert start["initial"] >= 10 and ev[-1]["event"] == "done" and ev[-1]["steps"] == 40
    assert (out / "weights.safetensors").exists()


def test_predict_errors_leave_existing_output_untouched(tmp_path, tiny_package, kmeans_t1):
    out = tmp_path / "existing.nii.gz"
    out.write_bytes(b"previous result")
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output", str(out),
                   "--device", "cpu")
    assert_user_error(proc, r"existing\.nii\.gz already exists; pass --overwrite to replace it")
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), str(kmeans_t1),
                   "--output", str(out), "--device", "cpu", "--overwrite")  # replacing allowed, but the run fails
    assert_user_error(proc, r"expects 1 channel\(s\) \(image\) but 2 input image\(s\)")
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.nii.gz"]  # no temporary file left


def test_predict_never_writes_over_an_input_and_checks_outputs_before_work(tmp_path, tiny_package, kmeans_t1):
    """Found by a user audit: --output equal to --input had replaced the scan by its segmentation; an output
    named twice by two spellings lost one; an ending no writer takes failed with a traceback after the work."""
    import shutil

    scan = tmp_path / "scan.nii.gz"
    shutil.copy(kmeans_t1, scan)
    before = scan.read_bytes()
    pkg = ["predict", "--model", str(tiny_package), "--device", "cpu", "--input"]
    link = tmp_path / "link.nii.gz"
    link.symlink_to(scan)
    cases = [
        ([str(scan), "--output", str(scan), "--overwrite"], r"scan\.nii\.gz is one of the input images"),
        ([str(scan), "--output", str(link), "--overwrite"], r"link\.nii\.gz is one of the input images"),
        ([f"{scan}::t=0", "--output", str(scan), "--overwrite"], r"is one of the input images"),
        ([str(scan), "--output", str(tmp_path / "o.nii.gz"), "--uncertainty", f"{tmp_path}/./o.nii.gz"],
         r"--output and --uncertainty name the same file"),
        ([str(scan), "--output", str(tmp_path / "o.txt")], r"o\.txt: medssl writes \.nii\.gz, .*\.dcm files"),
        ([str(scan), "--output", str(tmp_path)], r"is a folder; give a file name inside it"),
        ([str(scan), "--output", str(tmp_path / "o.seg.nrrd"), "--probabilities", str(tmp_path / "p.seg.nrrd")],
         r"--probabilities .*p\.seg\.nrrd: \.seg\.nrrd is for segmentations"),
    ]
    for args, pattern in cases:
        assert_user_error(run_cli(*pkg, *args), pattern)
    assert scan.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["link.nii.gz", "scan.nii.gz"]


@pytest.mark.parametrize("argv,pattern", [
    (["predict", "--model", "{pkg}", "--input", "/nonexistent/ct.nii.gz", "--output", "{tmp}/o.nii.gz"],
     "input image .* does not exist"),
    (["predict", "--model", "{tmp}/nope", "--input", "{t1}", "--output", "{tmp}/o.nii.gz"], "does not exist"),
    (["predict", "--model", "{pkg}", "--input", "{t1}", "--output", "{tmp}/o.nii.gz", "--overlap", "1.2"],
     "out of range"),
    (["finetune", "--images", "{t1}", "--labels", "{lab}", "--out", "{tmp}/m", "--steps", "0"], "out of range"),
    (["finetune", "--images", "{t1}", "{t1}", "--labels", "{lab}", "--out", "{tmp}/m"], "2 image case.* 1 label map"),
    (["finetune", "--images", "{t1}", "--labels", "{lab}", "--out", "{tmp}/m", "--backbone", "resnet50"],
     r"--backbone 'resnet50' is neither an architecture \(fmunet, .*\), a model package folder, a weight id .* nor "
     r"an existing checkpoint file"),
    (["predict", "--model", "{pkg}", "--input", "{t1}", "--output", "{tmp}/o.nii.gz", "--device", "cuda"],
     "no CUDA GPU"),
])
def test_cli_error_contract(tmp_path, tiny_package, kmeans_t1, kmeans_labels, argv, pattern):
    fill = {"pkg": str(tiny_package), "tmp": str(tmp_path), "t1": str(kmeans_t1), "lab": str(kmeans_labels)}
    argv = [a.format(**fill) for a in argv]
    if "cuda" in argv:  # a fresh process, where CUDA can be hidden even on a GPU machine
        proc = run_cli(*argv, env=NO_GPU)
    else:  # the error path itself: the same main() in-process, without ~2 s of start-up
        proc = cli_in_process(*argv)
    assert_user_error(proc, pattern)
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "m" / "weights.safetensors").exists()


def test_debug_flag_shows_the_traceback(tmp_path, kmeans_t1):
    proc = run_cli("predict", "--model", str(tmp_path / "nope"), "--input", str(kmeans_t1), "--output",
                   str(tmp_path / "o.nii.gz"), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "error: model package" in proc.stderr


def test_json_progress_reports_errors_as_events(tmp_path, kmeans_t1):
    proc = run_cli("predict", "--model", str(tmp_path / "nope"), "--input", str(kmeans_t1), "--output",
                   str(tmp_path / "o.nii.gz"), "--progress", "json")
    ev = events(proc.stdout)
    assert ev[-1]["event"] == "error" and "does not exist" in ev[-1]["message"] and ev[-1]["exit_code"] == 2


def test_info_reports_versions_and_home(tmp_path):
    proc = run_cli("info", "--json", env={"MEDSSL_HOME": str(tmp_path / "home")})
    info = json.loads(proc.stdout)
    assert proc.returncode == 0 and info["medssl_home"] == str(tmp_path / "home")
    assert {"torch", "monai", "medssl", "cuda_available", "gpus"} <= set(info)
    from medssl.inference.runtimes import cpu_has_bf16

    assert info["cpu_training"] == ("bfloat16 autocast" if cpu_has_bf16() else "float32")
    assert info["cpu_predict"].split()[1] == ("bfloat16" if cpu_has_bf16() else "float32")


def test_python_m_and_console_script_agree():
    script = Path(sys.executable).with_name("medssl")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    a = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    b = run_cli("--version")
    assert a.stdout == b.stdout and a.stdout.startswith("medssl ")


def test_json_progress_always_ends_in_done_or_error(tmp_path, tiny_package, kmeans_t1, monkeypatch, capsys):
    """Found by a user audit: a usage error and an unexpected exception had ended the event stream without an
    ``error`` event, leaving the Slicer modules nothing to show."""
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output",
                   str(tmp_path / "o.nii.gz"), "--overlap", "2", "--progress", "json")
    assert proc.returncode == 2 and [e["event"] for e in events(proc.stdout)] == ["error"]
    assert "overlap" in events(proc.stdout)[0]["message"] and proc.stderr.count("\n") == 1
    from medssl.cli.main import main
    from medssl.inference.predictor import Predictor

    def broken(*args, **kwargs):
        raise ValueError("something medssl did not expect\nsecond line")

    monkeypatch.setattr(Predictor, "from_package", broken)
    with pytest.raises(ValueError, match="did not expect"):  # the traceback is the bug report
        main(["predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output", str(tmp_path / "o.nii.gz"),
              "--progress", "json"])
    last = events(capsys.readouterr().out)[-1]
    assert last["event"] == "error" and last["exit_code"] == 1
    assert last["message"].startswith("internal error (ValueError: something medssl did not expect); this is a bug")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc (a folder no one can write in)")
def test_an_unwritable_output_folder_is_one_line_also_for_root(tmp_path, tiny_package, kmeans_t1):
    """Found by a user audit: os.access says yes to root everywhere, and the temporary file then failed with a
    traceback; the folder is now tried for real."""
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output", "/proc/o.nii.gz")
    assert_user_error(proc, r"output folder /proc is not writable")


def test_a_folder_of_the_users_is_never_replaced(tmp_path, tiny_package, kmeans_t1, kmeans_labels):
    """Found by a user audit: ``finetune --out`` into a folder of scans replaced it (scans and notes gone) without
    --overwrite, and ``import --overwrite`` replaced any folder; a file as --out left a hidden file behind."""
    import shutil

    from medssl.hub.share import export_package

    mine = tmp_path / "scans"
    mine.mkdir()
    shutil.copy(kmeans_t1, mine / "scan.nii.gz")
    (mine / "notes.txt").write_text("mine")
    before = sorted(p.name for p in mine.iterdir())
    for extra in ([], ["--overwrite"]):
        proc = run_cli("finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out", str(mine),
                       "--backbone", "resenc:test", "--steps", "1", "--device", "cpu", *extra)
        assert_user_error(proc, r"--out .*scans holds files medssl did not write \(notes\.txt, scan\.nii\.gz\)")
    archive = export_package(tiny_package, tmp_path / "m.zip").archive
    assert_user_error(run_cli("import", str(archive), "--out", str(mine), "--overwrite"), r"holds files medssl did not")
    assert sorted(p.name for p in mine.iterdir()) == before
    (tmp_path / "afile").write_text("a file")
    assert_user_error(run_cli("import", str(archive), "--out", str(tmp_path / "afile"), "--overwrite"),
                      r"afile is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "a file" and not list(tmp_path.glob(".afile*"))
    assert run_cli("import", str(archive), "--out", str(tmp_path / "pkg")).returncode == 0
    assert run_cli("import", str(archive), "--out", str(tmp_path / "pkg"), "--overwrite").returncode == 0  # a model
