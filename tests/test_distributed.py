"""The Ray backend gives the local backend's results: same features, same maps, same clusters (ARI = 1).

A local Ray instance is started on loopback (2 CPUs, no dashboard) for the module; the films are a few hundred tiny
synthetic PNGs of four planted kinds; the model is cnn-small at 32 px (seeded, untrained). Also a CPU smoke test of
multi-process training with torchrun (DDP, gloo, 2 processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xray_xai.errors import PluginError
from xray_xai.sdk.interfaces import Record

N_FILMS = 200
SIZE = 32

# Ray start-up alone takes 10-30 s on a small machine: every test using it is marked slow


def _films(folder: Path, n: int) -> list[Record]:
    """Four kinds of film (bright top, bright bottom, bright left, dark), with noise."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        img = rng.random((SIZE, SIZE)) * 0.2
        kind = i % 4
        if kind == 0:
            img[: SIZE // 2] += 0.7
        elif kind == 1:
            img[SIZE // 2 :] += 0.7
        elif kind == 2:
            img[:, : SIZE // 2] += 0.7
        path = folder / f"film{i:04d}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
        recs.append(Record(path=path))
    return recs


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="the ray backend needs ray[data]")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    import torch
    from xray_xai_plugins.models.small_cnns import CnnSmall

    tmp = tmp_path_factory.mktemp("dist")
    recs = _films(tmp / "films", N_FILMS)
    (tmp / "films" / "broken.png").write_bytes(b"not a png")
    recs.append(Record(path=tmp / "films" / "broken.png"))
    torch.manual_seed(0)
    model = CnnSmall(image_size=SIZE).eval()
    return tmp, recs, model


@pytest.mark.slow
def test_features_equal_local(setup):
    from xray_xai.cluster.features import extract_features
    from xray_xai.scale.ray import extract_features_ray, gather_features

    tmp, recs, model = setup
    summary = extract_features_ray(model, recs, tmp / "feat", batch_size=32, concurrency=2)
    assert len(list((tmp / "feat").glob("*.parquet"))) >= 2  # sharded
    assert [p.path for p in summary["skipped"]] == [str(recs[-1].path)]
    kept, probs = gather_features(tmp / "feat", tmp / "feat.npy", len(recs))
    local = extract_features(model, recs, batch_size=32, use_cache=False, progress=False)
    assert kept.sum() == len(local) == N_FILMS and not kept[-1]
    X = np.load(tmp / "feat.npy")
    np.testing.assert_allclose(X[kept], local.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs[kept], local.probabilities, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cluster_equal_local(setup):
    from sklearn.metrics import adjusted_rand_score
    from xray_xai_plugins.clusterers.kmeans import PcaKMeans

    from xray_xai.cluster.features import extract_features
    from xray_xai.scale.ray import cluster_ray

    tmp, recs, model = setup
    res = cluster_ray(model, recs, tmp / "clu", k=4, seed=0, batch_size=64, concurrency=2)
    local = extract_features(model, recs, batch_size=32, use_cache=False, progress=False)
    local_labels = PcaKMeans(n_clusters=4, random_state=0).fit(local.features).labels_
    labels = res["labels"]
    assert labels[-1] == -1 and (labels[:-1] >= 0).all()
    assert adjusted_rand_score(local_labels, labels[:-1]) == pytest.approx(1.0)
    kinds = np.arange(N_FILMS) % 4
    assert adjusted_rand_score(kinds, labels[:-1]) == pytest.approx(1.0)  # the planted kinds are found
    import pyarrow.parquet as pq

    table = pq.read_table(str(tmp / "clu" / "assignments.parquet"))
    assert table.column("cluster").to_pylist() == labels.tolist()


@pytest.mark.slow
def test_cluster_streamed_matches(setup):
    """Over the in-memory limit the features are streamed from the memory map: same partition of the films."""
    from sklearn.metrics import adjusted_rand_score

    from xray_xai.scale.ray import cluster_ray

    tmp, recs, model = setup
    res = cluster_ray(model, recs, tmp / "clu-stream", k=4, seed=0, batch_size=64, concurrency=2, in_memory_limit=0)
    assert res["streamed"]
    kinds = np.arange(N_FILMS) % 4
    assert adjusted_rand_score(kinds, res["labels"][:-1]) == pytest.approx(1.0)


@pytest.mark.slow
def test_explain_equal_local(setup):
    import pyarrow.parquet as pq

    from xray_xai.explain.service import explain
    from xray_xai.scale.ray import explain_ray

    tmp, recs, model = setup
    few = recs[:40] + recs[-1:]
    summary = explain_ray(model, "gradcam", few, tmp / "maps", batch_size=16, concurrency=2)
    assert summary["n_explained"] == 40 and len(summary["skipped"]) == 1
    with pytest.raises(PluginError, match="linear head"):  # refused on the driver, before any actor starts
        explain_ray(model, "cam", few, tmp / "never", concurrency=1)
    table = pq.read_table(str(tmp / "maps")).sort_by("index")
    local = explain(model, "gradcam", records=few, out=None, batch_size=16, show_progress=False)
    maps = {it["image"] if "image" in it else it["path"]: it["explanation"].maps[0] for it in local.items}
    rows = table.to_pylist()
    assert len(rows) == 41
    got = 0
    for row in rows:
        if row["problem"]:
            continue
        m = np.asarray(row["map"], dtype=np.float32).reshape(SIZE, SIZE)
        ref = next(v for k, v in maps.items() if str(k).endswith(Path(row["path"]).name))
        np.testing.assert_allclose(m, ref, atol=1e-5)
        got += 1
    assert got == 40


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(Path(sys.executable).parent / "torchrun"),
                    reason="torchrun not installed")  # fmt: skip
def test_torchrun_ddp_smoke(tmp_path):
    """Two CPU processes (gloo) train cnn-small for a few steps; their weights stay identical (DDP all-reduce)."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ddp_smoke.py"
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), "--steps", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert len(set(result["checksums"])) == 1  # every rank holds the same weights
    assert result["changed"]  # and training moved them


@pytest.mark.slow
def test_commands_behind_backend_ray(setup):
    """What ``--backend ray`` calls: the local services' image selection, JSON-ready summaries."""
    import pyarrow.parquet as pq

    from xray_xai.scale.ray import cluster_command, explain_command

    tmp, _, model = setup
    films = tmp / "films"
    summary = explain_command([model], ["gradcam"], inputs=[films], limit=24, out=tmp / "cmd-maps", batch_size=8)
    json.dumps(summary)
    assert summary["runs"][0]["n_images"] == 24
    assert pq.read_table(str(tmp / "cmd-maps" / model.name / "gradcam")).num_rows == 24
    res = cluster_command(model, films, splits=("all",), threshold=None, k=4, out_dir=tmp / "cmd-clu")
    json.dumps(res)
    assert res["n_selected"] == N_FILMS and sum(res["sizes"].values()) == N_FILMS
    assert [s["path"] for s in res["skipped"]] == [str(films / "broken.png")]


def test_gather_features_orders_rows_and_skips_problems(tmp_path):
    """Shards arrive in any order; the gathered matrix follows the record order and leaves bad rows out."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from xray_xai.scale.ray import gather_features

    shards = tmp_path / "shards"
    shards.mkdir()
    rows = {0: [1.0, 2.0], 1: [3.0, 4.0], 2: [0.0, 0.0], 3: [5.0, 6.0]}
    for name, idx in (("b.parquet", [3, 0]), ("a.parquet", [2, 1])):
        pq.write_table(
            pa.table(
                {
                    "index": idx,
                    "path": [f"f{i}.png" for i in idx],
                    "probability": [0.1 * i for i in idx],
                    "features": [rows[i] for i in idx],
                    "problem": ["unreadable" if i == 2 else "" for i in idx],
                }
            ),
            str(shards / name),
        )
    kept, probs = gather_features(shards, tmp_path / "x.npy", 4)
    assert kept.tolist() == [True, True, False, True]
    X = np.load(tmp_path / "x.npy")
    np.testing.assert_array_equal(X[kept], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(probs[kept], [0.0, 0.1, 0.3])


def test_ddp_helpers_single_process():
    """Outside torchrun the helpers are a no-op: rank 0 of 1, the whole list, the model unwrapped."""
    import torch

    from xray_xai.scale import ddp

    assert (ddp.rank(), ddp.world_size(), ddp.is_main()) == (0, 1, True)
    assert ddp.shard(list(range(5))) == [0, 1, 2, 3, 4]
    net = torch.nn.Linear(2, 1)
    assert ddp.wrap(net, torch.device("cpu")) is net


# -- the CLI's --backend ray (fast: the distributed functions are replaced by recorders) ------------------------------
class _Recorder:
    """Stands in for a distributed command: records its call and returns a canned JSON-ready summary."""

    def __init__(self, summary: dict) -> None:
        self.summary = summary
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.summary


def test_explain_cli_backend_ray_calls_explain_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import xray_xai.scale.ray as distributed
    from xray_xai.cli import main

    run = {"model": "m", "method": "gradcam", "n_images": 3, "n_explained": 3, "seconds": 1.0}
    fake = _Recorder({"backend": "ray", "out": str(tmp_path / "maps"), "skipped": [], "runs": [run]})
    monkeypatch.setattr(distributed, "explain_command", fake)
    film = tmp_path / "film.png"
    args = ["explain", "--model", "cnn-small", "--methods", "gradcam,saliency", "--input", str(film),
            "--out", str(tmp_path / "maps"), "--batch-size", "4", "--limit", "3", "--param", "saliency.n_segments=20",
            "--backend", "ray", "--concurrency", "5", "--ray-address", "ray://head:10001"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["backend"] == "ray"
    (models, methods), kw = fake.calls[0]
    assert list(models) == ["cnn-small"] and list(methods) == ["gradcam", "saliency"]
    assert [Path(p) for p in kw["inputs"]] == [film] and Path(kw["out"]) == tmp_path / "maps"
    assert kw["batch_size"] == 4 and kw["limit"] == 3 and kw["concurrency"] == 5
    assert kw["address"] == "ray://head:10001" and kw["params"] == {"saliency": {"n_segments": 20}}
    assert not (tmp_path / "maps").exists()  # the local service never ran

    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0, plain.output
    assert plain.output.count("\n") == 1 and "3 map(s)" in plain.output  # one-line summary without --json

    refused = CliRunner().invoke(main, [*args, "--resume"])
    assert refused.exit_code == 2 and "--resume" in refused.output and len(fake.calls) == 2


def test_cluster_cli_backend_ray_calls_cluster_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import xray_xai.scale.ray as distributed
    from xray_xai.cli import main

    fake = _Recorder({"backend": "ray", "out": str(tmp_path / "clu"), "n_images": 10, "n_selected": 6, "k": 3,
                      "sizes": {"0": 2, "1": 2, "2": 2}, "streamed": False, "seconds": 1.0, "fit_seconds": 0.1,
                      "skipped": []})  # fmt: skip
    monkeypatch.setattr(distributed, "cluster_command", fake)
    args = ["cluster", "--model", "cnn-small", "--data", str(tmp_path), "--k", "3", "--splits", "all",
            "--all-images", "--out", str(tmp_path / "clu"), "--param", "n_components=5", "--backend", "ray",
            "--concurrency", "3"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_selected"] == 6
    (model, root), kw = fake.calls[0]
    assert model == "cnn-small" and Path(root) == tmp_path
    assert kw["k"] == 3 and tuple(kw["splits"]) == ("all",) and kw["threshold"] is None
    assert kw["concurrency"] == 3 and kw["address"] is None and kw["method_params"] == {"n_components": 5}
    assert Path(kw["out_dir"]) == tmp_path / "clu"

    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0 and plain.output.count("\n") == 1 and "6 of 10 films" in plain.output

    refused = CliRunner().invoke(main, [*args, "--select-k", "2-4"])
    assert refused.exit_code == 2 and "--select-k" in refused.output and len(fake.calls) == 2


def test_backend_ray_without_ray_is_one_line(tmp_path, monkeypatch):
    """No Ray installed: exit 1 with one line that says how to get it, not a traceback."""
    from click.testing import CliRunner

    from xray_xai.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    film = tmp_path / "film.png"
    film.write_bytes(b"")
    result = CliRunner().invoke(
        main, ["explain", "--model", "cnn-small", "--method", "gradcam", "--input", str(film), "--backend", "ray"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'pip install "xray-xai[ray]"' in lines[0]


def test_ray_backend_uses_only_public_helpers_of_other_modules() -> None:
    # the Ray backend selects films, builds clusterers and embeds batches with the local service's own functions:
    # those must be public (documented) in the module that owns them, not private names reached into
    import ast

    import xray_xai.scale.ray as ray_backend

    tree = ast.parse(Path(ray_backend.__file__).read_text(encoding="utf-8"))
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xray_xai")
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert private == []


def test_cluster_commands_default_to_the_shared_decision_threshold() -> None:
    import inspect

    from xray_xai.cluster.service import cluster
    from xray_xai.defaults import DECISION_THRESHOLD
    from xray_xai.scale.ray import cluster_command

    for fn in (cluster, cluster_command):
        assert inspect.signature(fn).parameters["threshold"].default == DECISION_THRESHOLD
