"""Films cut short, one policy (issue 14, item 7): warnings.csv beside skipped.csv, ``--strict`` on the commands."""

from __future__ import annotations

import csv
from pathlib import Path

import badinputs as bad
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


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder with two whole films, a slightly cut JPEG and a JPEG cut in half; and a tiny checkpoint."""
    root = tmp_path_factory.mktemp("films")
    folder = root / "films"
    folder.mkdir()
    from PIL import Image

    for i in range(2):
        Image.fromarray(bad._film(64, i)).save(folder / f"whole{i}.png")
    bad.slightly_cut_film(folder, "slight.jpg")
    bad.truncated_jpeg(folder, "half.jpg")
    return folder, bad.tiny_checkpoint(root / "ckpt")


def _run(*args: object) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from xray_xai.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("strict", [False, True])
def test_predict_keeps_slightly_cut_films_with_a_warning_unless_strict(
    films: tuple[Path, Path], tmp_path: Path, strict: bool
) -> None:
    folder, ckpt = films
    out = tmp_path / "preds.csv"
    code, _, err = _run("predict", "--checkpoint", ckpt, "--model", ckpt, "--input", folder, "--csv", out,
                        *(["--strict"] if strict else []))  # fmt: skip
    assert code == 0, err
    predicted = {Path(r["path"]).name for r in csv.DictReader(out.open())}
    skipped = {Path(r["path"]).name: r["problem"] for r in csv.DictReader((tmp_path / "preds.skipped.csv").open())}
    warned = {Path(r["path"]).name: r["problem"] for r in csv.DictReader((tmp_path / "preds.warnings.csv").open())}
    if strict:
        assert predicted == {"whole0.png", "whole1.png"} and set(skipped) == {"half.jpg", "slight.jpg"}
        assert "refused: strict reading" in skipped["slight.jpg"] and warned == {}
    else:
        assert predicted == {"whole0.png", "whole1.png", "slight.jpg"} and set(skipped) == {"half.jpg"}
        assert warned["slight.jpg"].startswith("JPEG stream ends early") and warned["slight.jpg"].endswith(": kept")
        assert f"warning: {folder / 'slight.jpg'}: JPEG stream ends early" in err
    assert "refused: under 90% of the rows decoded" in skipped["half.jpg"]
