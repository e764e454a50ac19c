"""Prediction and saving a package do not import MONAI: ``monai/__init__`` loads matplotlib and most of MONAI,
1.37 of the 4.0 s of a demo ``medssl predict`` (README, *Runtimes*). Checked in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_predicting_and_saving_a_package_leave_monai_unimported(tiny_package, kmeans_t1, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from medssl import Predictor
        from medssl.hub.package import load_package, save_package
        pred = Predictor.from_package({str(tiny_package)!r}, "cpu", "torch", "float32")
        pred.predict([{str(kmeans_t1)!r}], tta=True)
        pred.predict([{str(kmeans_t1)!r}], low_memory=True)
        plan, net, meta = load_package({str(tiny_package)!r}, check_forward=False)
        save_package({str(tmp_path / "copy")!r}, plan, net.state_dict(), {{"licence": "test"}})
        loaded = sorted(m for m in sys.modules if m == "monai" or m.startswith("monai."))
        print(loaded[:5])
        assert not loaded, loaded
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
