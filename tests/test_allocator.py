from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from xray_xai._util.allocator import keep_freed_memory as k; print(k(), k())"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc thresholds")
def test_thresholds_raised_once_and_opt_out_respected() -> None:
    import platform

    on = _run({})
    if platform.libc_ver()[0] == "glibc":
        assert on.split() == ["True", "True"]  # raised, and the second call reports the same without redoing it
    assert _run({"XRAY_XAI_KEEP_MEMORY": "0"}).split() == ["False", "False"]
    assert _run({"MALLOC_MMAP_THRESHOLD_": "131072"}).split() == ["False", "False"]  # the user's choice wins
