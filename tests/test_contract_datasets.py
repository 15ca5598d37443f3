"""Every registered dataset plugin passes the shipped contract checks on an example tree of its layout."""

from __future__ import annotations

from pathlib import Path

import pytest

import xray_xai
from xray_xai.testing.datasets import check_dataset, example_root


@pytest.mark.parametrize("name", xray_xai.list_datasets())
def test_dataset_contract(name: str, tmp_path: Path) -> None:
    made = example_root(name, tmp_path)
    if made is None:
        pytest.skip(f"no example tree for third-party dataset {name!r}")
    root, options = made
    ds = xray_xai.get_dataset(name)(root, **options)
    check_dataset(ds)


def test_builtin_dataset_names_are_public() -> None:
    assert {"mura", "fracatlas", "folder", "synthetic"} <= set(xray_xai.list_datasets())
