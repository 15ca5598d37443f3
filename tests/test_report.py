"""The HTML report parses, holds every cell of the audit grid, escapes text and fetches nothing."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xray_xai.report.html import AUDIT_COLUMNS, format_stat, overlay_png, write_report


class Collect(HTMLParser):
    """Gathers text, tags and every src/href attribute; fails on unbalanced table markup."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.srcs: list[str] = []
        self.stack: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)
        self.srcs += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _stat(mean: float, rng: np.random.Generator) -> dict[str, Any]:
    lo, hi = sorted(rng.uniform(0, 1, 2))
    return {"mean": round(mean, 6), "ci": [round(lo, 6), round(hi, 6)], "n": 10}


def _fake_audit(out: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    png = overlay_png(rng.random((16, 16)), rng.random((16, 16)), mask=np.eye(16, dtype=bool))
    (out / "examples").mkdir(parents=True)
    (out / "examples" / "a.png").write_bytes(png)
    pairs = []
    for model in ("densenet-full", "<b>evil</b>"):
        for method in ("gradcam", "saliency"):
            pair: dict[str, Any] = {"model": model, "method": method, "status": "ok"}
            for _, section, key in AUDIT_COLUMNS:
                pair.setdefault(section, {})[key] = _stat(float(rng.random()), rng)
            stage = {"layer": "classifier", "spearman": _stat(0.5, rng), "ssim": _stat(0.4, rng)}
            pair["sanity"] = {"status": "pass", "spearman_full": 0.12, "threshold": 0.5, "stages": [stage]}
            pair["controls"] = {"edges": {"localisation": {"pointing": _stat(0.2, rng)}}}
            pair["examples"] = {"best": [{"image_id": "s1/x.png", "mass_in_mask": 0.9, "png": "examples/a.png"}]}
            pairs.append(pair)
    pairs.append({"model": "lbp", "method": "gradcam", "status": "skipped", "reason": "needs a target layer"})
    return {"config": {"steps": 32, "grid": 8, "seed": 0}, "pairs": pairs, "problems": ["bad.png: cannot decode"]}


def test_report_holds_every_grid_cell(tmp_path: Path) -> None:
    result = _fake_audit(tmp_path)
    evaluation = {"densenet-full": {"auc": 0.8765, "kappa": 0.61}}
    clustering = {"n_clusters": 3, "clusters": [{"id": 0, "size": 12}, {"id": 1, "size": 7}]}
    path = write_report(tmp_path, audit=result, evaluation=evaluation, clustering=clustering, title="T & <x>")
    assert path == tmp_path / "report.html"
    parser = Collect()
    parser.feed(path.read_text())
    parser.close()
    assert not [t for t in parser.stack if t not in ("html", "body")]
    rows = {(r[0], r[1]): r for r in parser.rows if len(r) == len(AUDIT_COLUMNS) + 3}
    for pair in result["pairs"][:-1]:
        row = rows[(pair["model"], pair["method"])]  # the model name as text, unescaped by the parser
        for i, (_, section, key) in enumerate(AUDIT_COLUMNS):
            assert row[2 + i] == format_stat(pair[section][key])
        assert row[-1].startswith("pass")
    text = "".join(parser.text)
    assert "needs a target layer" in text and "bad.png: cannot decode" in text
    assert "0.877" in text and "T & <x>" in text and "12" in text
    html = path.read_text()
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs) and parser.srcs  # nothing fetched
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["audit"]["pairs"][0]["faithfulness"] == result["pairs"][0]["faithfulness"]
    assert saved["evaluation"] == evaluation and saved["title"] == "T & <x>"


def test_report_json_is_strict_and_images_stay_inside_out_dir(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(overlay_png(np.zeros((4, 4)), np.zeros((4, 4))))
    out = tmp_path / "rep"
    audit = {
        "pairs": [
            {
                "model": "m",
                "method": "x",
                "status": "ok",
                "faithfulness": {"deletion_auc": float("nan")},
                "examples": {"best": [{"image_id": "i", "png": "../secret.png"}]},
            }
        ]
    }
    write_report(out, audit=audit)
    assert json.loads((out / "report.json").read_text())["audit"]["pairs"][0]["faithfulness"]["deletion_auc"] is None
    assert "base64" not in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("stat", "text"),
    [
        ({"mean": 0.1234, "ci": [0.1, 0.2]}, "0.123 [0.100, 0.200]"),
        ({"mean": None, "ci": [None, None]}, "–"),
        (0.5, "0.500"),
        (None, "–"),
        ({"mean": 1.0, "ci": [None, None]}, "1.000"),
    ],
)
def test_format_stat(stat: Any, text: str) -> None:
    assert format_stat(stat) == text


def test_overlay_png_is_a_png_of_the_film_size() -> None:
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(overlay_png(np.ones((20, 30)) * 0.5, np.zeros((20, 30)), mask=np.ones((20, 30), bool))))
    assert img.size == (30, 20) and img.mode == "RGB"
