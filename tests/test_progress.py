"""Progress a person can follow (issue 20, finding 7): plain throttled lines when stderr is a file or a pipe, the
audit's count advancing image by image (it sat at 0% until a whole model x method pair ended), explain per image."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import torch
from test_audit import InputGradient, TinyData, TinyGap, registered, tiny_data  # noqa: F401 (fixtures)

from xray_xai._util import progress as progress_mod
from xray_xai._util.progress import progress, ticker


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress on (the suite turns it off in conftest) and a line at every step."""
    monkeypatch.delenv("XRAY_XAI_NO_PROGRESS", raising=False)
    monkeypatch.setenv("XRAY_XAI_PROGRESS_SECONDS", "0")


def _counts(text: str, pattern: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(pattern, text)]


def test_plain_lines_on_a_non_terminal_are_throttled_and_flushed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XRAY_XAI_PROGRESS_SECONDS", raising=False)
    monkeypatch.delenv("XRAY_XAI_NO_PROGRESS", raising=False)
    clock = _Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)

    class Flushed(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    stream = Flushed()
    with ticker(100, "auditing", unit="images", stream=stream) as bar:
        assert bar.mode == "lines"  # a StringIO is not a terminal: no rich bar, no silence
        for _ in range(10):  # quick steps in the first 2 s: nothing yet
            clock.now += 0.1
            bar.advance()
        assert stream.getvalue() == ""
        clock.now += 2  # 3 s: the first line
        bar.advance()
        assert stream.getvalue().splitlines() == ["auditing: 11/100 images (11%), 3 s, about 24 s left"]
        for _ in range(50):  # 50 s more, one step a second: one line per 10 s
            clock.now += 1
            bar.advance()
        assert len(stream.getvalue().splitlines()) == 6
        clock.now += 10
        bar.describe("cnn-small x gradcam: sanity")  # a new phase shows in the next line
        assert "auditing cnn-small x gradcam: sanity: 61/100" in stream.getvalue().splitlines()[-1]
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "auditing: 61/100 images (61%), done in 63 s"
    assert stream.flushes == len(lines)  # each line reaches the file as it is written


def test_interval_zero_writes_every_step_and_no_progress_silences(
    every_step: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    assert list(progress(range(3), "epoch 1/2", stream=stream)) == [0, 1, 2]
    assert stream.getvalue().splitlines()[:2] == [
        "epoch 1/2: 1/3 (33%), 0 s, about 0 s left",
        "epoch 1/2: 2/3 (67%), 0 s, about 0 s left",
    ]
    assert stream.getvalue().splitlines()[-1].startswith("epoch 1/2: 3/3 (100%), done in")
    monkeypatch.setenv("XRAY_XAI_NO_PROGRESS", "1")
    quiet = io.StringIO()
    assert list(progress(range(3), "x", stream=quiet)) == [0, 1, 2] and quiet.getvalue() == ""


def _audit(data: TinyData, progress_on: bool) -> dict[str, Any]:
    from xray_xai.audit.service import audit

    torch.manual_seed(0)
    model = TinyGap().eval()
    return audit(
        [model], [InputGradient.name], None, dataset=data, n=8, steps=3, grid=8, batch_size=2, n_boot=20,
        sanity_stages=1, sanity_n=2, control_faithfulness=False, progress=progress_on,
    )  # fmt: skip


def test_audit_progress_advances_image_by_image_and_changes_no_number(
    tiny_data: TinyData,  # noqa: F811 (the fixture)
    registered: None,  # noqa: F811
    every_step: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    shown = _audit(tiny_data, True)
    text = stderr.getvalue()
    n = len(shown["pairs"][0]["per_image"])  # the films read (the broken one skipped)
    assert text.splitlines()[-1].startswith(f"auditing: {n}/{n} images (100%), done in"), text
    counts = _counts(text, rf": (\d+)/{n} images")
    inside = [c for c in counts if 0 < c < n]  # one model x one method: the old bar went 0 -> 1 of 1 at the end
    assert len(set(inside)) >= 3, text
    assert counts == sorted(counts) and counts[-1] == n
    for phase in ("maps", "faithfulness curves", "sanity cascade"):
        assert f"x {InputGradient.name}: {phase}: " in text, text
    quiet = _audit(tiny_data, False)
    for key in ("faithfulness", "localisation", "sanity"):
        assert shown["pairs"][0][key] == quiet["pairs"][0][key], key


def test_explain_progress_counts_images(
    tiny_data: TinyData,  # noqa: F811 (the fixture)
    registered: None,  # noqa: F811
    every_step: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xray_xai.explain.service import explain

    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    recs = [r for r in tiny_data.records("test") if r.path.suffix == ".png" and "broken" not in r.path.name]
    result = explain([TinyGap().eval()], [InputGradient.name], records=recs, out=None, batch_size=2)
    assert len(result.items) == len(recs)
    counts = _counts(stderr.getvalue(), rf"explaining: (\d+)/{len(recs)} images")
    assert counts[:3] == [2, 4, 6], stderr.getvalue()
