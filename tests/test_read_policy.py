"""Films cut short, one policy (issue 14, item 7): warnings.csv beside skipped.csv, ``--strict`` on the commands."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from xray_xai._util.fsutil import warnings_csv_path, write_skipped_csv
from xray_xai.sdk.interfaces import Problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [("skipped.csv", "warnings.csv"), ("preds.skipped.csv", "preds.warnings.csv"), ("bad.csv", "bad.warnings.csv")],
)
def test_warnings_csv_sits_beside_the_skipped_list(tmp_path: Path, name: str, expected: str) -> None:
    assert warnings_csv_path(tmp_path / name) == tmp_path / expected


def test_write_skipped_csv_writes_both_lists(tmp_path: Path) -> None:
    err = Problem("a.png", "empty file (0 bytes)")
    warn = Problem("b.jpg", "JPEG stream ends early (no end marker), 9 of 10 rows decoded (90.0 %): kept", "warning")
    other = Problem("c.png", "PNG stream ends early: kept", "warning")
    out = write_skipped_csv(tmp_path / "skipped.csv", [err, other], warnings=[warn])
    assert out == tmp_path / "skipped.csv"
    assert list(csv.reader(out.open())) == [["path", "problem"], ["a.png", "empty file (0 bytes)"]]
    rows = list(csv.DictReader((tmp_path / "warnings.csv").open()))
    assert [(r["path"], r["problem"]) for r in rows] == [(other.path, other.problem), (warn.path, warn.problem)]
    write_skipped_csv(tmp_path / "empty" / "skipped.csv", [])
    assert (tmp_path / "empty" / "warnings.csv").read_text() == "path,problem\n"
