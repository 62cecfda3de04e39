"""A user's model without ``embed`` and ``head`` (a plain ``nn.Sequential`` inside): the signals that
need no embedding (logits, predictions, loss) come from its forward, so a performance trigger runs on
it as on the same model exposing ``embed`` and ``head``; a trigger that asks for embeddings (drift on
the model's embeddings) is refused at start-up, naming the setting, before any folder is written."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from torch import nn

from ctsim.engine.base import SignalRequest
from ctsim.models import ModelSpec
from ctsim.validation import ConfigError

from .conftest import build, cli, run, small
from .test_signals import ENGINES


class Plain(nn.Module):
    """A user's model: one ``nn.Sequential``, no ``embed``, no ``head``."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(input_shape[-1], 16), nn.ReLU(), nn.Linear(16, num_classes)
        )

    def forward(self, x):
        return self.layers(x)


class Exposed(Plain):
    """The same model (same parameters, same names, same initialisation), exposing ``embed`` and ``head``."""

    def embed(self, x):
        return self.layers[:-1](x)

    @property
    def head(self) -> nn.Module:
        return self.layers[-1]


def _specs() -> tuple[ModelSpec, ModelSpec]:
    return ModelSpec(Plain, (3,), 2), ModelSpec(Exposed, (3,), 2)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINES)
def test_logits_predictions_and_loss_of_a_model_without_embed_equal_the_exposed_models(engine):
    """Every engine's signal path (sequential, batched vmap, batched loop) on two states of each."""
    plain, exposed = _specs()
    states = [plain.build(seed=s, dtype=torch.float64).state_dict() for s in (0, 1)]
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (40,), generator=g)
    needs = frozenset({"logits", "predictions", "loss"})
    eng = ENGINES[engine]()
    got = eng.signals([SignalRequest(plain, s, needs) for s in states], x, y)
    want = eng.signals([SignalRequest(exposed, s, needs) for s in states], x, y)
    for g_out, w_out in zip(got, want):
        assert set(g_out) == needs
        for name in needs:
            assert torch.equal(g_out[name], w_out[name]), name
    assert not torch.equal(got[0]["logits"], got[1]["logits"])  # the two states were both used


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINES)
def test_embeddings_asked_of_a_model_without_embed_are_a_clear_error(engine):
    """A trigger of a user's that asks for embeddings without declaring them (so start-up cannot tell)."""
    plain, _ = _specs()
    request = SignalRequest(plain, plain.build(dtype=torch.float64).state_dict(), frozenset({"embeddings"}))
    asks = r"Plain has no embed\(x\) and head, and a policy asks for its embeddings: it needs a model"
    with pytest.raises(ConfigError, match=asks):
        ENGINES[engine]().signals([request], torch.zeros(4, 3, dtype=torch.float64))


def _with_model(tmp_path, name: str, *extra: str) -> list[str]:
    """Overrides for a small SEA run (8 slices, the concept moves at slice 4) with this module's
    ``name`` model."""
    conf = tmp_path / "configs" / "model"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / f"{name.lower()}.yaml").write_text(f"_target_: {__name__}.{name}\n_partial_: true\n")
    return small(
        tmp_path,
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]",
        f"model={name.lower()}",
        "population.variants={}",
        "dataset=sea",
        "dataset.slices=8",
        "dataset.change_points=[4]",
        "dataset.thresholds=[9.5,7]",
        "dataset.per_slice=200",
        "dataset.noise=0.0",
        "selection=all",
        "optimizer.lr=0.05",
        "train.batch_size=16",
        "train.epochs=5",
        *extra,
    )


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_a_performance_trigger_on_a_model_without_embed_decides_as_on_the_exposed_model(tmp_path, engine):
    """``trigger=performance`` asks for predictions only: the run finishes, and every decision and
    accuracy is the one the same model gives when it exposes ``embed`` and ``head``."""
    found = {}
    for name in ("Plain", "Exposed"):
        out = tmp_path / name / "run"
        overrides = ["trigger=performance", "trigger.min_accuracy=0.85", f"engine={engine}"]
        run(_with_model(tmp_path / name, name, *overrides), out)
        found[name] = (
            pl.read_parquet(out / "generations.parquet").sort("generation"),
            pl.read_parquet(out / "evals.parquet").sort(["generation", "slice", "metric"]),
        )
    (plain_gens, plain_evals), (exposed_gens, exposed_evals) = found["Plain"], found["Exposed"]
    decisions = ["generation", "trigger_batch", "trigger_reason", "n_selected", "status"]
    assert plain_gens.select(decisions).equals(exposed_gens.select(decisions))
    evals = ["generation", "slice", "metric", "value"]
    assert plain_evals.select(evals).equals(exposed_evals.select(evals))
    # it decided on the model's predictions: it fired on some batches (accuracy below 0.85), not all
    fired = plain_gens["trigger_batch"].to_list()[1:]
    assert 0 < len(fired) < 7, fired
    assert all(r.startswith("performance: accuracy") for r in plain_gens["trigger_reason"].to_list()[1:])


@pytest.mark.parametrize(
    ("trigger", "key"),
    [(["trigger=drift"], "trigger.encoder"), (["trigger=ensemble"], "trigger.members.drift.encoder")],
)
def test_drift_on_the_embeddings_of_a_model_without_embed_is_refused_before_any_folder(
    tmp_path, trigger, key
):
    """One line naming the setting, the model and what it needs; exit code 2; no run folder, no data."""
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "class Plain(nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.layers = nn.Sequential(\n"
        "            nn.Linear(input_shape[0], 8), nn.ReLU(), nn.Linear(8, num_classes)\n"
        "        )\n"
        "    def forward(self, x):\n"
        "        return self.layers(x)\n"
    )
    (tmp_path / "cfg" / "model").mkdir(parents=True)
    (tmp_path / "cfg" / "model" / "mine.yaml").write_text("_target_: mynets.Plain\n_partial_: true\n")
    args = ["--config-dir", str(tmp_path / "cfg"), "model=mine", "hydra.run.dir=out", "dataset=sea"]
    done = cli(
        [*args, f"dataset.root={tmp_path / 'data'}", *trigger], tmp_path, env={"PYTHONPATH": str(tmp_path)}
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"{key}: asks for the active model's embeddings, which model mynets.Plain cannot give: expected a "
        'model with embed(x) and head(embedding) (see docs/extending.md, "A model")'
    ) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_drift_on_features_that_need_no_model_embeddings_builds_with_a_model_without_embed(tmp_path):
    """The refusal follows what the trigger asks for, not its class: projected inputs need no embed."""
    overrides = _with_model(tmp_path, "Plain", "trigger=drift")
    with pytest.raises(ConfigError, match=r"trigger\.encoder: asks for the active model's embeddings"):
        build(overrides)
    plan = build([*overrides, "trigger/encoder=projection"])
    assert plan.pipelines[0].trigger.encoder.needs_model is False


class OnEmbeddings:
    """A user's trigger that declares, by its own setting, that it asks for the model's embeddings."""

    def __init__(self, features: str = "model"):
        self.features = features

    def signal_needs(self) -> dict[str, frozenset[str]]:
        return {"features": frozenset({"embeddings"})} if self.features == "model" else {}

    def observe(self, ctx):
        return None


def test_a_users_trigger_that_declares_embeddings_is_refused_by_the_setting_it_names(tmp_path):
    """The check reads what a trigger declares (``signal_needs``), not a list of ctsim's own triggers."""
    (tmp_path / "configs" / "trigger").mkdir(parents=True)
    (tmp_path / "configs" / "trigger" / "mine.yaml").write_text(
        f"_target_: {__name__}.OnEmbeddings\nfeatures: model\n"
    )
    overrides = _with_model(tmp_path, "Plain", "trigger=mine")
    with pytest.raises(ConfigError, match=r"trigger\.features: asks for the active model's embeddings"):
        build(overrides)
    assert build(_with_model(tmp_path, "Exposed", "trigger=mine")).pipelines  # a model that embeds
    assert build([*overrides, "trigger.features=raw"]).pipelines  # a setting that asks for none


@pytest.mark.parametrize("form", ["stb", "bts"])
@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_loss_downsampling_of_a_model_without_embed_keeps_the_exposed_models_samples(tmp_path, engine, form):
    """Scores other than grad_norm read the logits alone: the run keeps (and trains on) the samples the
    same model keeps when it exposes ``embed`` and ``head``. Once refused at start-up, for any score."""
    found = {}
    for name in ("Plain", "Exposed"):
        out = tmp_path / name / "run"
        down = ["selection/downsample=loss", f"selection.downsample.form={form}", f"engine={engine}"]
        run(_with_model(tmp_path / name, name, "trigger=amount", "trigger.every=400", *down), out)
        found[name] = (
            pl.read_parquet(out / "lineage.parquet").sort("generation"),
            pl.read_parquet(out / "evals.parquet").sort(["generation", "slice", "metric"]),
        )
    (plain_keys, plain_evals), (exposed_keys, exposed_evals) = found["Plain"], found["Exposed"]
    assert plain_keys.height > 1 and plain_keys.equals(exposed_keys)
    evals = ["generation", "slice", "metric", "value"]
    assert plain_evals.select(evals).equals(exposed_evals.select(evals))


def test_grad_norm_downsampling_still_needs_embed_and_a_linear_head(tmp_path):
    with pytest.raises(ConfigError) as e:
        build(_with_model(tmp_path, "Plain", "selection/downsample=grad_norm"))
    assert (
        "selection.downsample.score='grad_norm': expected a model with embed(x) and a torch.nn.Linear head"
        in str(e.value)
    )
