"""Distributed training (``torchrun`` / ``xray-xai train --nproc``) runs the one-process recipe.

Two CPU ranks (gloo) are forked from the test process (torch is already imported, so they start in a fraction of a
second) and call ``train`` as torchrun's processes would (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...) on a tiny
synthetic MURA tree (``make_tiny_mura``: 32 px films, abnormal ones carry a bright square). The model is cnn-small
with a linear head (``hidden=()``: no batch-norm, no dropout) and no augmentation, so the only randomness left is the
loader's permutation, which every rank draws as one process does: the same films form the same global batches, and
the per-epoch training loss must match the one-process run to float rounding. Tolerance: relative 1e-5 on each
epoch's loss and 1e-5 absolute on each weight; measured differences are about 1e-7 and 2e-8 (the gradient of a
global batch is the sum of two half-batch sums instead of one, so the last bits differ). With batch-norm the runs
part (each CPU rank normalises over its own films; SyncBatchNorm exists only on GPUs), so it is left out here.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from test_training import OPTS, make_tiny_mura

from xray_xai import api
from xray_xai.errors import CheckpointError, PluginError
from xray_xai.models import distributed
from xray_xai.models.training import train

RECIPE: dict[str, Any] = {
    "dataset": "mura", "epochs": 3, "batch_size": 8, "image_size": 32, "augment": "none", "hidden": (),
    "optimizer": "sgd", "lr": 0.1, "dataset_options": OPTS, "progress": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mura(tmp_path_factory.mktemp("ddp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world: int, port: int, root: str, out: str, kwargs: dict[str, Any], report: str) -> None:
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    try:
        res = train("cnn-small", root, out_dir=out, **{**RECIPE, **kwargs})
        payload: dict[str, Any] = {"history": res.history, "checkpoint": str(res.checkpoint)}
    except Exception as exc:  # reported to the test, which asserts on it
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    Path(report).write_text(json.dumps(payload))


needs_fork = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="forks the ranks")


def _ranks(root: Path, out: Path, tmp: Path, world: int = 2, **kwargs: Any) -> list[dict[str, Any]]:
    """``train`` in ``world`` forked processes, as torchrun would start them; each rank's result or error."""
    ctx = mp.get_context("fork")
    port = _free_port()
    reports = [tmp / f"rank{r}-{out.name}.json" for r in range(world)]
    procs = [
        ctx.Process(target=_rank, args=(r, world, port, str(root), str(out), kwargs, str(reports[r])))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():  # pragma: no cover - a hung collective
            p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [json.loads(r.read_text()) for r in reports]


@needs_fork
def test_two_ranks_follow_the_one_process_run(films: Path, tmp_path: Path) -> None:
    from xray_xai.data.loader import RecordDataset
    from xray_xai.models.epochs import evaluate_logits, make_loader
    from xray_xai.models.splits import open_splits
    from xray_xai.models.store import load_model, read_sidecar

    one = train("cnn-small", films, out_dir=tmp_path / "one", **RECIPE)
    ranks = _ranks(films, tmp_path / "two", tmp_path)
    assert all("error" not in r for r in ranks), ranks
    two = ranks[0]["history"]
    same = ("train_loss", "val_loss", "val_accuracy", "lr")
    assert [[row[k] for k in same] for row in ranks[1]["history"]] == [[row[k] for k in same] for row in two]
    losses_1 = [row["train_loss"] for row in one.history]
    losses_2 = [row["train_loss"] for row in two]
    assert losses_1 == pytest.approx(losses_2, rel=1e-5)
    assert losses_1[-1] < losses_1[0]  # it trained
    last_1 = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    last_2 = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    for key, tensor in last_1["model"].items():
        torch.testing.assert_close(last_2["model"][key], tensor, atol=1e-5, rtol=0)
    assert last_2["world_size"] == 2 and len(last_2["rng_torch_ranks"]) == 2 and last_1["world_size"] == 1

    # one store entry, one run folder, written by rank 0; the sidecar records the world size
    assert ranks[0]["checkpoint"] == ranks[1]["checkpoint"]
    side = read_sidecar(ranks[0]["checkpoint"])
    assert side["hyperparameters"]["world_size"] == 2 and side["hyperparameters"]["batch_size"] == 8
    assert read_sidecar(one.checkpoint)["hyperparameters"]["world_size"] == 1
    stored = sorted(p.parent for p in Path(os.environ["XRAY_XAI_HOME"]).rglob("model.json"))
    assert len(stored) == 2  # the one-process run's and the two-process run's
    assert (tmp_path / "two" / "history.csv").read_text().count("\n") == 1 + RECIPE["epochs"]

    # validation (rank 0, whole split) equals a one-process evaluation of the same weights
    model = load_model(ranks[0]["checkpoint"])
    model.load_state_dict(last_2["model"])
    _, _, val = open_splits(films, "mura", None, None, 0, OPTS)
    ds, loader, _ = make_loader(val, model.preprocessing, augment=None, batch_size=8, shuffle=False, seed=0,
                                num_workers=0)  # fmt: skip
    assert isinstance(ds, RecordDataset)
    logits, labels, _ = evaluate_logits(model, ds, loader, torch.device("cpu"), channels_last=True, amp=False)
    val_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert val_loss == two[-1]["val_loss"]

    # resuming with another number of processes is refused, naming last.pt and both world sizes
    with pytest.raises(
        CheckpointError, match=r"last\.pt: cannot resume: saved by a run on 2 process\(es\), this run has 1"
    ):
        train("cnn-small", films, out_dir=tmp_path / "two", resume=True, **{**RECIPE, "epochs": 4})
    refused = _ranks(films, tmp_path / "one", tmp_path, resume=True, epochs=4)
    assert all("saved by a run on 1 process(es), this run has 2" in r.get("error", "") for r in refused), refused


@needs_fork
def test_resume_on_as_many_ranks_continues_the_run(films: Path, tmp_path: Path) -> None:
    straight = _ranks(films, tmp_path / "a", tmp_path, epochs=2)[0]["history"]
    _ranks(films, tmp_path / "b", tmp_path, epochs=1)
    resumed = _ranks(films, tmp_path / "b", tmp_path, epochs=2, resume=True)[0]["history"]
    assert [row["epoch"] for row in resumed] == [1, 2]
    assert resumed[1]["train_loss"] == straight[1]["train_loss"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_rank_takes_its_share_of_the_same_global_batches() -> None:
    from torch.utils.data import BatchSampler, RandomSampler

    def batches(world: int, rank: int, n: int = 23, size: int = 6) -> list[list[int]]:
        gen = torch.Generator().manual_seed(0)
        sampler = BatchSampler(RandomSampler(range(n), generator=gen), size, drop_last=False)
        return [list(b) for b in distributed._RankShare(sampler, rank, world)]

    whole = batches(1, 0)
    for world in (2, 3):
        shares = [batches(world, r) for r in range(world)]
        assert all(len(s) == len(whole) for s in shares)
        for k, batch in enumerate(whole):
            joined = [i for s in shares for i in s[k]]
            assert joined == batch  # contiguous, in rank order, nothing lost or repeated
            assert max(len(s[k]) for s in shares) - min(len(s[k]) for s in shares) <= 1


def test_short_batches_are_padded_with_weight_zero_films() -> None:
    from xray_xai.data.loader import Batch

    def collate(items: list[int]) -> Batch:
        n = len(items)
        return Batch(torch.ones(n, 1, 4, 4), torch.ones(n), torch.tensor(items, dtype=torch.long), [])

    pad = distributed._Padded(collate, least=2, sentinel=99, shape=(1, 4, 4))
    one = pad([5])
    assert one.indices.tolist() == [5, 99] and one.images.shape == (2, 1, 4, 4) and one.labels.tolist() == [1, 1]
    none = pad([])
    assert none.indices.tolist() == [99, 99] and none.images.shape == (2, 1, 4, 4) and not none.images.any()
    assert pad([1, 2, 3]).indices.tolist() == [1, 2, 3]


def test_the_global_batch_must_split_over_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(PluginError, match="batch size 8 is the global batch; it must be divisible by the 3"):
        distributed.join(8, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.join(8, "cpu") is None  # torchrun with one process: a plain run


def test_cli_nproc_launches_torchrun_with_the_same_arguments(films: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xray_xai.cli import main

    seen: list[tuple[int, list[str]]] = []
    monkeypatch.setattr(api, "launch_train", lambda n, args: seen.append((n, list(args))) or 3)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = ["train", "--model", "cnn-small", "--data", str(films), "--nproc", "2", "--batch-size", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 3, res.output  # the launcher's status
    assert seen == [(2, args[1:])]
    assert distributed.strip_nproc(seen[0][1]) == args[1:5] + args[7:]
    assert distributed.strip_nproc(["--nproc=2", "--seed", "1"]) == ["--seed", "1"]
    bad = CliRunner().invoke(main, [*args[:-1], "5"])
    assert bad.exit_code == 2 and "5 is the global batch; it must be divisible by --nproc 2" in bad.output
    monkeypatch.setenv("WORLD_SIZE", "4")
    other = CliRunner().invoke(main, args)
    assert other.exit_code == 2 and "2 given, but torchrun started 4 processes" in other.output


@pytest.mark.slow  # two interpreters importing torch under torchrun: about 25 s on 2 cores
def test_xray_xai_train_nproc_end_to_end(films: Path, tmp_path: Path) -> None:
    """``xray-xai train --nproc 2``: torchrun started by the command, one JSON result, one store entry; a resume
    with another number of processes is one line naming last.pt."""
    import subprocess
    import sys

    from xray_xai.models.store import read_sidecar

    out = tmp_path / "run"
    args = ["--model", "cnn-small", "--data", str(films), "--image-size", "32", "--epochs", "2", "--batch-size", "8",
            "--hidden", "none", "--augment", "none", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "xray_xai", "train", *args, "--nproc", "2", "--json"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert len(result["history"]) == 2 and result["run_dir"] == str(out)
    assert read_sidecar(result["checkpoint"])["hyperparameters"]["world_size"] == 2
    assert len(list(Path(os.environ["XRAY_XAI_HOME"]).rglob("model.json"))) == 1
    refused = subprocess.run(
        [sys.executable, "-m", "xray_xai", "train", *args, "--epochs", "3", "--resume", "--nproc", "1"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {out / 'last.pt'}: cannot resume: saved by a run on 2 process(es), this run has 1; "
        "resume with --nproc 2"
    )
