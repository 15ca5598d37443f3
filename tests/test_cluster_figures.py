"""The clustering's pictures are drawn without touching the process's matplotlib state."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    # a fresh interpreter whose user chose the PDF backend: drawing the K curve and the projection must keep it,
    # and must not import pyplot (whose global figure registry would keep every figure alive)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        import matplotlib
        import numpy as np

        matplotlib.use("pdf")
        from xray_xai.cluster.figures import plot_k_selection, plot_projection

        out = Path({str(tmp_path)!r})
        plot_k_selection([2, 3, 4], [0.2, 0.5, 0.3], 3, out / "k.png", "pca-kmeans")
        Z = np.random.default_rng(0).normal(size=(20, 3))
        labels = np.arange(20) % 3
        plot_projection(out / "p.png", object(), Z, Z, labels, ["hand", None] * 10)
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["pdf", "False"]
    for name in ("k.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
