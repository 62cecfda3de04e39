"""The engine from the command line: the vmap route end to end for every model kind, and train.freeze."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from ctsim.engine.batched import BatchedEngine
from ctsim.registry.layout import read_status

from .conftest import cli, run, small

VARIANTS = [
    '+population.variants.every5=["trigger=time","trigger.every=5"]',
    '+population.variants.amount=["trigger=amount","trigger.every=150","optimizer.lr=0.02"]',
    "population.only=[every5,amount]",
]
MODELS = {
    "mlp": ["dataset.size=0.03", "model=mlp", "model.hidden=[32]"],
    "yearbooknet": ["dataset.size=0.03", "model=yearbooknet", "model.channels=4"],
    "cnn": ["dataset.size=0.03", "model=cnn", "model.channels=4", "model.hidden=16"],
    "lstm": ["dataset=sensors", "dataset.size=0.3", "model=lstm", "model.hidden=12"],
    "gru": ["dataset=sensors", "dataset.size=0.3", "model=gru", "model.hidden=12"],
}


@pytest.fixture
def routes(monkeypatch):
    """(vmapped, models) of every chunk the batched engine trains."""
    seen = []
    train_chunk = BatchedEngine._train_chunk

    def spy(self, jobs, x, y, vmapped, *args):
        seen.append((vmapped, len(jobs)))
        return train_chunk(self, jobs, x, y, vmapped, *args)

    monkeypatch.setattr(BatchedEngine, "_train_chunk", spy)
    return seen


@pytest.mark.parametrize("model", list(MODELS))
def test_the_vmap_route_runs_end_to_end_and_equals_the_sequential_engine(model, tmp_path, routes):
    common = small(tmp_path, *MODELS[model], *VARIANTS, "population.seeds=[0,1]", "train.epochs=1")
    common += ["output.checkpoints=none", "engine.dtype=float64"]
    batched = run([*common, "engine=batched", "engine.route=vmap"], tmp_path / "vmap").tables
    assert routes and all(vmapped for vmapped, _ in routes) and max(n for _, n in routes) == 4
    sequential = run([*common, "engine=sequential"], tmp_path / "sequential").tables
    keys = ["pipeline", "seed", "generation", "slice", "metric"]
    a, b = batched["evals"].sort(keys), sequential["evals"].sort(keys)
    assert a.height == b.height > 100 and a.select(keys).equals(b.select(keys))
    assert a["value"].equals(b["value"])  # identical accuracy values
    steps = ["pipeline", "seed", "generation", "optimizer_steps", "status"]
    gens = [t["generations"].sort(steps[:3]).select(steps) for t in (batched, sequential)]
    assert gens[0].equals(gens[1]) and gens[0]["status"].unique().to_list() == ["ok"]


def test_train_freeze_trains_the_head_alone_across_generations(tmp_path):
    out = tmp_path / "run"
    overrides = small(
        tmp_path, "dataset.size=0.05", "model.channels=8", "train.epochs=1", "train.freeze=[features]"
    )
    run([*overrides, "population.only=[every_5y]"], out)
    gens = pl.read_parquet(out / "generations.parquet").sort("generation")
    assert gens.height > 5
    states = [torch.load(out / path, weights_only=True) for path in gens["checkpoint"]]
    for earlier, later in itertools.pairwise(states):
        for k, v in earlier.items():
            if k.startswith("features.") and ("weight" in k or "bias" in k):
                assert torch.equal(v, later[k]), k  # frozen: every generation keeps generation 0's
        assert not torch.equal(earlier["head.weight"], later["head.weight"])  # the head trains


def _users_model(tmp_path, source: str, cls: str) -> list[str]:
    """A user's model class in ``mynets.py`` and ``cfg/model/mine.yaml``: the args that pick it."""
    (tmp_path / "mynets.py").write_text(source)
    (tmp_path / "cfg" / "model").mkdir(parents=True)
    (tmp_path / "cfg" / "model" / "mine.yaml").write_text(f"_target_: mynets.{cls}\n_partial_: true\n")
    return ["--config-dir", str(tmp_path / "cfg"), "model=mine", "hydra.run.dir=out"]


def test_a_users_model_with_torchs_lstm_on_the_vmap_route_is_refused_before_any_folder(tmp_path):
    """``engine.route=vmap`` with layers vmap cannot stack: one line naming the layer, exit code 2."""
    source = (
        "from torch import nn\n"
        "class TorchLSTM(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.rnn = nn.LSTM(input_shape[1], 8, batch_first=True)\n"
        "        self.head = nn.Linear(8, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.rnn(x)[0][:, -1])\n"
    )
    args = [*_users_model(tmp_path, source, "TorchLSTM"), "dataset=sensors", "engine.route=vmap"]
    done = cli(args, tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "engine.route='vmap'" in done.stderr and "rnn (LSTM)" in done.stderr
    assert "engine.route=loop" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        # one output too many: it trained to the end, then the evaluation failed on class 2
        ("nn.Linear(3, num_classes + 1)", "it gives (2, 3) on a batch of 2 inputs of shape (3,)"),
        # in-features fixed by hand: it failed mid-run, in the first training step
        ("nn.Linear(5, num_classes)", "it cannot take a batch of inputs of shape (3,) (RuntimeError: mat1"),
    ],
)
def test_a_users_model_whose_forward_gives_no_logits_is_refused_before_any_folder(tmp_path, layer, expected):
    """A forward that cannot take the dataset's inputs, or gives other than ``(batch, classes)``."""
    source = (
        "from torch import nn\n"
        "class Wrong(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        f"        self.head = {layer}\n"
        "    def forward(self, x):\n"
        "        return self.head(x)\n"
    )
    done = cli(
        [*_users_model(tmp_path, source, "Wrong"), "dataset=sea", "dataset.size=0.05", "progress=false"],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert "model='mynets.Wrong': expected a model whose forward gives logits (batch, classes)" in done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_ctsim_command_imports_a_users_model_from_the_folder_it_starts_in(tmp_path):
    """``ctsim ...`` and ``python -m ctsim ...`` are the same command: the console script, whose import
    path holds its own bin folder, once stopped at the user's ``mynets.Net`` (not importable)."""
    source = (
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.head = nn.Linear(input_shape[0], num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.head(x)\n"
    )
    args = [*_users_model(tmp_path, source, "Net"), "dataset=sea", "dataset.size=0.05", "train.epochs=1"]
    script = Path(sys.executable).with_name("ctsim")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), *args, "progress=false", "output.plots=false", "population.variants={}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert read_status(tmp_path / "out")["status"] == "finished"


def test_a_users_model_with_a_seeded_buffer_it_does_not_save_is_refused(tmp_path):
    """A random projection registered with ``persistent=False`` would be drawn anew for evaluation."""
    source = (
        "import torch\n"
        "from torch import nn\n"
        "class Projected(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.register_buffer('proj', torch.randn(3, 8), persistent=False)\n"
        "        self.drop = nn.Dropout(0.1)\n"  # its seed buffer is not saved on purpose: not named
        "        self.head = nn.Linear(8, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.drop(x @ self.proj))\n"
    )
    done = cli(
        [*_users_model(tmp_path, source, "Projected"), "dataset=sea"],
        tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert (
        "model='mynets.Projected'" in done.stderr
        and "the buffers proj differ from seed to seed" in done.stderr
    )
    assert "drop.seed" not in done.stderr and not (tmp_path / "out").exists()
