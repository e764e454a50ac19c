"""``medssl weights download`` against a Hugging Face-compatible file server on loopback (README: "resumable,
sha256-checked, progress bar"): the real huggingface_hub client (``HF_ENDPOINT``) downloads through HTTP.
A connection dropped mid-file is resumed with an HTTP ``Range`` request for the rest only; the file is
byte-identical to the served one, its sha256 recorded, and the JSON progress events count up to its size.
A download killed with SIGKILL leaves no partial file behind once the next one finishes. Nothing leaves
127.0.0.1.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from medssl_test_utils import REPO

ENTRY = "vocomni_b"  # downloadable, no licence to accept, no hash in the catalog (recorded on download)
CHUNK = 10 * 2**20  # huggingface_hub writes the body in 10 MB chunks (constants.DOWNLOAD_CHUNK_SIZE)
PAYLOAD = os.urandom(CHUNK + 2**20 + 12345)
HALF = CHUNK + 2**19  # where the first connection breaks: one whole chunk is on disk by then


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list = []
        self.sent_half, self.release = threading.Event(), threading.Event()
        self.mode = "drop"  # first GET: "drop" closes the connection after HALF bytes, "stall" waits after them


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _headers(self, status: int, length: int, extra: dict) -> None:
        self.send_response(status)
        for key, value in {"X-Repo-Commit": "0123456789abcdef0123456789abcdef01234567", "Accept-Ranges": "bytes",
                           "ETag": f'"{hashlib.sha256(PAYLOAD).hexdigest()}"', "Content-Length": str(length),
                           **extra}.items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:
        self.server.requests.append(("HEAD", self.path, None))
        self._headers(200, len(PAYLOAD), {})

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.server.requests.append(("GET", self.path, rng))
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start:
            self._headers(206, len(PAYLOAD) - start, {"Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"})
        else:
            self._headers(200, len(PAYLOAD), {})
        if start == 0 and self.server.mode in ("drop", "stall"):
            self.wfile.write(PAYLOAD[:HALF])
            self.wfile.flush()
            self.server.sent_half.set()
            if self.server.mode == "stall":
                self.server.release.wait(120)  # the client is killed meanwhile
            self.server.mode = "serve"
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD[start:])


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def download_cmd(srv: Server, home: Path) -> tuple:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in ("HF_TOKEN",)}
    env.update({"HF_ENDPOINT": f"http://127.0.0.1:{srv.server_address[1]}", "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "MEDSSL_HOME": str(home),
                "HF_HOME": str(home / "hf"), "PYTHONPATH": str(REPO / "src"), "NO_PROXY": "127.0.0.1"})
    return [sys.executable, "-m", "medssl", "weights", "download", ENTRY, "--progress", "json"], env


def partial_files(home: Path) -> list:
    return [p for p in home.rglob("*.incomplete")]


def run_events(stdout: str) -> list:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == "progress" and e.get("stage") == "download"]


def downloaded_file(home: Path) -> Path:
    files = [p for p in (home / "weights" / ENTRY).iterdir() if p.is_file() and p.name != "record.json"]
    assert len(files) == 1, files
    return files[0]


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    home = tmp_path / "home"
    cmd, env = download_cmd(server, home)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    gets = [r[2] for r in server.requests if r[0] == "GET"]
    assert len(gets) == 2 and gets[0] is None, server.requests
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1])[1])
    assert 0 < resumed_at <= HALF, gets  # the rest only, from the bytes already written (CHUNK here)
    assert downloaded_file(home).read_bytes() == PAYLOAD
    record = json.loads((home / "weights" / ENTRY / "record.json").read_text())
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["how"] == "download"
    progress = run_events(done.stdout)
    assert progress and progress[-1]["done"] == progress[-1]["total"] == len(PAYLOAD), progress[-3:]
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    assert not partial_files(home)


def test_download_killed_with_sigkill_leaves_no_partial_file(server, tmp_path):
    home = tmp_path / "home"
    cmd, env = download_cmd(server, home)
    server.mode = "stall"
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.sent_half.wait(120), "the client never downloaded"
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size >= CHUNK for p in partial_files(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    server.release.set()
    assert partial_files(home), "the killed download left nothing on disk: the test did not kill it mid-file"
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-2000:]
    assert downloaded_file(home).read_bytes() == PAYLOAD
    assert not partial_files(home), partial_files(home)  # the killed run's 10 MB are not left behind
