"""Every config composes and instantiates; bad values stop the run early with errors naming the key."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from ctsim.app.cli import CONF_DIR
from ctsim.app.compose import PIPELINE_GROUPS
from ctsim.models import LSTM, MLP, YearbookNet
from ctsim.triggers import AmountTrigger, NeverTrigger, TimeTrigger
from ctsim.validation import ConfigError

from .conftest import REPO, build, cli, small

GROUP_OPTIONS = [
    (group.name, path.stem)
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir()
    for path in sorted(group.glob("*.yaml"))
    if not path.stem.startswith("_")  # a block options share (selection/_base.yaml), not an option
]


# Models and datasets that only fit each other: a choice's partner option.
PARTNER = {
    "model=lstm": "dataset=sensors",
    "model=gru": "dataset=sensors",
    "model=bow": "dataset=sea",  # takes token ids: refused there (BOW_ON_NUMBERS), built in test_text.py
    "dataset=sensors": "model=lstm",
    "dataset=sea": "model=mlp",
    "dataset=hyperplane": "model=mlp",
    "dataset=rbf": "model=mlp",
}
BOW_ON_NUMBERS = r"expected a model that takes numbers .* dataset sea fits model=mlp"
# Datasets read from a user's files: without them the option composes and names what is missing.
NEEDS_FILES = {
    "yearbook": "ctsim datasets prepare yearbook --from",
    "vision_stream": "ctsim datasets prepare vision_stream --from",
    "huffpost": "ctsim datasets prepare huffpost --from",
    "arxiv": "ctsim datasets prepare arxiv --from",
    "table": "dataset.path=null: expected the CSV or parquet file to read",
}


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_config_option_composes_and_builds(tmp_path, group, option):
    choice = f"{group}={option}"
    single = ["population.variants={}"] if group in PIPELINE_GROUPS else []
    overrides = small(tmp_path, choice, *single, *[PARTNER[choice]] if choice in PARTNER else [])
    if choice == "model=bow":  # the text datasets it fits need prepared files (tests/test_text.py)
        with pytest.raises(ConfigError, match=BOW_ON_NUMBERS):
            build(overrides)
        return
    if group == "dataset" and option in NEEDS_FILES:
        with pytest.raises(ConfigError) as e:
            build(overrides)
        assert NEEDS_FILES[option] in str(e.value)
        return
    plan = build(overrides)
    assert plan.pipelines
    if group == "dataset":  # the option chose its dataset (portraits_small: a fifth of portraits)
        assert plan.dataset.name == option.removesuffix("_small")
    for p in plan.pipelines:
        assert p.model.build() is not None


def test_a_model_that_does_not_fit_the_dataset_is_named(tmp_path):
    with pytest.raises(
        ConfigError, match=r"model\.input_shape=\(1, 32, 32\): expected \(sequence length, features\)"
    ):
        build(small(tmp_path, "model=lstm"))
    with pytest.raises(
        ConfigError, match=r"model\.input_shape=\(24, 4\): expected \(channels, height, width\)"
    ):
        build(small(tmp_path, "dataset=sensors", "model=yearbooknet"))
    # an image model on a dataset of feature vectors: the error says which model fits
    with pytest.raises(ConfigError, match=r"model\.input_shape=\(3,\): .*dataset sea fits model=mlp"):
        build(small(tmp_path, "dataset=sea", "model=yearbooknet"))


@pytest.mark.parametrize(
    ("dataset", "model"),
    [("portraits", YearbookNet), ("sensors", LSTM), ("sea", MLP), ("hyperplane", MLP), ("rbf", MLP)],
)
def test_without_a_model_a_dataset_gets_the_model_that_fits_it(tmp_path, dataset, model):
    """``python -m ctsim dataset=NAME`` runs: the default model follows the dataset."""
    plan = build(small(tmp_path, f"dataset={dataset}"))
    assert {type(p.model.build()) for p in plan.pipelines} == {model}
    # a model named on the command line still wins (on a dataset of features: an MLP of another width)
    other = "model.hidden=[7]" if model is MLP else "model=mlp"
    net = build(small(tmp_path, f"dataset={dataset}", other)).pipelines[0].model.build()
    assert type(net) is MLP and (model is not MLP or net.head.in_features == 7)


def test_defaults_are_the_quickstart():
    plan = build([])
    assert plan.name == "quickstart"
    assert [v.name for v in plan.variants] == ["yearly", "every_5y", "never"]
    assert [type(p.trigger) for p in plan.pipelines] == [TimeTrigger, TimeTrigger, NeverTrigger]
    assert [getattr(p.trigger, "every", None) for p in plan.pipelines] == [1, 5, None]
    assert plan.engine.name == "batched"
    assert plan.dataset.name == "portraits" and plan.dataset.size == 0.2
    # the quickstart's small portraits never shrink another dataset named on the command line
    assert build(["dataset=sea", "model=mlp"]).dataset.size == 1.0
    assert build(["dataset=portraits"]).dataset.size == 1.0


def test_portraits_yearly_is_modyns_yearbook_setup():
    plan = build(["experiment=portraits_yearly"])
    (p,) = plan.pipelines
    assert plan.dataset.size == 1.0 and isinstance(p.trigger, TimeTrigger) and p.trigger.every == 1
    assert type(p.selection).__name__ == "NewData" and p.selection.tail == 0
    assert p.model.factory.func is YearbookNet
    assert (p.optimizer.lr, p.optimizer.momentum) == (0.001, 0.9)
    assert (p.train.epochs, p.train.batch_size, p.train.init) == (5, 64, "finetune")


def test_group_overrides_work_the_usual_hydra_way(tmp_path):
    plan = build(
        small(
            tmp_path,
            "experiment=portraits_yearly",
            "trigger=amount",
            "trigger.every=500",
            "selection=all",
            "model=mlp",
            "optimizer=adam",
            "optimizer.lr=0.01",
            "train.epochs=2",
        )
    )
    (p,) = plan.pipelines
    assert isinstance(p.trigger, AmountTrigger) and p.trigger.every == 500
    assert type(p.selection).__name__ == "AllData"
    assert p.model.factory.func is MLP
    assert type(p.optimizer).__name__ == "Adam" and p.optimizer.lr == 0.01
    assert p.train.epochs == 2


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=0", r"train\.epochs=0: expected an integer ≥ 1"),
        ("train.batch_size=-5", r"train\.batch_size=-5: expected an integer ≥ 1"),
        ("train.init=warm", r"train\.init='warm': expected one of \['finetune', 'scratch'\]"),
        ("optimizer.lr=0", r"optimizer\.lr=0: expected a number > 0"),
        ("optimizer.lr=-0.1", r"optimizer\.lr=-0\.1: expected a number > 0"),
        ("optimizer.momentum=1.5", r"optimizer\.momentum=1\.5: expected a number in \[0, 1\)"),
        ("trigger.every=0", r"trigger\.every=0: expected an integer ≥ 1"),
        ("dataset.size=0", r"dataset\.size=0: expected a number in \(0, 1\]"),
        ("dataset.size=-1", r"dataset\.size=-1: expected a number in \(0, 1\]"),
        ("dataset.size=1.5", r"dataset\.size=1\.5: expected a number in \(0, 1\]: the share of the dataset"),
        ("stream.arrival_batch=0", r"stream\.arrival_batch=0"),
        ("model.channels=0", r"model\.channels=0: expected an integer ≥ 1"),
        ("device=gpu", r"device='gpu': expected one of \['auto', 'cpu', 'cuda'\]"),
        ("population.seeds=[]", r"population\.seeds=\[\]"),
        ("output.checkpoints=some", r"output\.checkpoints='some'"),
        ("dataset.cache=maybe", r"dataset\.cache='maybe': expected true or false"),
        ("engine.precision=fp16", r"engine\.precision='fp16': expected one of \['fp32', 'bf16'\]"),
        ("engine.eval_batch_size=0", r"engine\.eval_batch_size=0: expected an integer ≥ 1"),
        ("engine.tf32=1", r"engine\.tf32=1: expected true or false"),
        ("engine.memory_budget=0", r"engine\.memory_budget=0: expected null, a number of bytes > 1"),
        ("engine.route=gpu", r"engine\.route='gpu': expected one of \['auto', 'vmap', 'loop'\]"),
        ("engine.compile=yes", r"engine\.compile='yes': expected true or false"),
        ("engine.cudnn_benchmark=1", r"engine\.cudnn_benchmark=1: expected auto, true or false"),
        ("engine.max_models=0", r"engine\.max_models=0: expected an integer ≥ 1"),
        (
            "train.freeze=[backbone]",
            r"train\.freeze=\['backbone'\]: expected names or prefixes of the model's",
        ),
        (
            "train.freeze=[features,head]",
            r"train\.freeze=\['features', 'head'\]: expected to leave at least one",
        ),
        ("train.freeze=features", r"train\.freeze='features': expected a list of parameter names"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path, override, message):
    overrides = small(tmp_path, "experiment=portraits_yearly", override)
    with pytest.raises(ConfigError, match=message):
        build(overrides)


def test_all_problems_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        build(
            small(
                tmp_path, "experiment=portraits_yearly", "train.epochs=0", "optimizer.lr=0", "dataset.size=0"
            )
        )
    keys = {p.key for p in info.value.problems}
    assert keys == {"train.epochs", "optimizer.lr", "dataset.size"}


def test_model_that_cannot_take_the_dataset_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.input_shape=\(1, 32, 32\): expected .* at least 64×64"):
        build(small(tmp_path, "experiment=portraits_yearly", "model.blocks=6"))


def test_unknown_arguments_name_the_component(tmp_path):
    with pytest.raises(ConfigError, match=r"trigger\.evry: unknown key; did you mean trigger\.every\?"):
        build(small(tmp_path, "experiment=portraits_yearly", "+trigger.evry=3"))


def test_unknown_group_option_lists_the_available_ones(tmp_path):
    with pytest.raises(MissingConfigException, match=r"Could not find 'model/resnet'") as info:
        build(small(tmp_path, "model=resnet"))
    assert "mlp" in info.value.options and "yearbooknet" in info.value.options
    with pytest.raises(MissingConfigException, match=r"Could not find 'dataset/imagenet'"):
        build(small(tmp_path, "dataset=imagenet"))


def test_run_overrides_apply_to_every_variant_that_does_not_set_them(tmp_path):
    plan = build(small(tmp_path, "train.epochs=2", "optimizer.lr=0.05", "population.seeds=[0,1]"))
    assert len(plan.pipelines) == 6
    assert {(p.train.epochs, p.optimizer.lr) for p in plan.pipelines} == {(2, 0.05)}
    by_name = {(p.name, p.seed): p for p in plan.pipelines}
    assert by_name[("yearly", 1)].trigger.every == 1 and by_name[("every_5y", 0)].trigger.every == 5


@pytest.mark.parametrize(
    "overrides,keys",
    [
        (["trigger.every=3"], "trigger.every"),  # yearly and every_5y set it; never picks another trigger
        (["trigger=amount", "trigger.every=500", "selection=all"], "trigger, trigger.every"),
        (["+trigger.extra=1"], "trigger.extra"),  # inside the group never and the others pick
    ],
)
def test_a_run_override_that_a_variant_replaces_is_an_error_naming_the_variants(tmp_path, overrides, keys):
    with pytest.raises(ConfigError) as info:
        build(small(tmp_path, *overrides))
    (problem,) = info.value.problems
    assert problem.key == keys
    text = str(problem)
    assert "yearly: trigger" in text and "never: trigger" in text
    assert "population.variants={}" in text and "population.only" in text


@pytest.mark.parametrize("single", ["population.variants={}", "population.variants=null"])
def test_population_variants_empty_runs_one_pipeline_with_the_run_overrides(tmp_path, single):
    plan = build(small(tmp_path, single, "trigger=amount", "trigger.every=500", "selection=all"))
    (p,) = plan.pipelines
    assert p.name == "quickstart" and isinstance(p.trigger, AmountTrigger) and p.trigger.every == 500
    assert type(p.selection).__name__ == "AllData"
    assert p.train.epochs == 3 and p.optimizer.lr == 0.01  # the experiment's own settings still hold


def test_a_variant_may_set_a_key_inside_a_group_the_run_picks(tmp_path):
    plan = build(
        small(
            tmp_path,
            "model=mlp",
            '+population.variants.narrow=["model.hidden=[16]"]',
            "population.only=[narrow]",
        )
    )
    (p,) = plan.pipelines  # both apply: the run's model=mlp, then the variant's width
    assert p.model.factory.func is MLP and p.model.factory.keywords["hidden"] == [16]


def test_variants_can_be_added_and_chosen_from_the_command_line(tmp_path):
    plan = build(
        small(
            tmp_path,
            '+population.variants.amount_300=["trigger=amount","trigger.every=300"]',
            "population.only=[amount_300,never]",
        )
    )
    assert [(p.name, type(p.trigger).__name__) for p in plan.pipelines] == [
        ("never", "NeverTrigger"),
        ("amount_300", "AmountTrigger"),
    ]


@pytest.mark.parametrize(
    "override,message",
    [
        ('+population.variants.bad=["trigger.every=0"]', r"bad:trigger\.every=0: expected an integer ≥ 1"),
        (
            '+population.variants.data=["dataset.size=0.5"]',
            r"population\.variants\.data=.*shared by every pipeline",
        ),
        (
            '+population.variants.typo=["trigger=sometimes"]',
            r"typo:trigger='sometimes': expected one of the options \['always', 'amount'",
        ),
        (
            "population.only=[yearly,nope]",
            r"population\.only=\['yearly', 'nope'\]: expected names of declared",
        ),
    ],
)
def test_bad_variants_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        build(small(tmp_path, override))


def test_cli_rejects_bad_values_before_generating_any_data(tmp_path):
    data_root = tmp_path / "never_created"
    out = tmp_path / "run"
    result = cli(
        [f"hydra.run.dir={out}", f"dataset.root={data_root}", "train.epochs=0", "optimizer.lr=-1"], cwd=REPO
    )
    assert result.returncode == 2
    assert "train.epochs=0: expected an integer ≥ 1" in result.stderr
    assert "optimizer.lr=-1: expected a number > 0" in result.stderr
    assert not data_root.exists()  # stopped before the dataset was generated, let alone trained on
    assert not list(out.glob("*.parquet"))


def test_a_users_own_dataset_without_a_default_model_asks_for_one(tmp_path):
    conf = tmp_path / "my_conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "mysea.yaml").write_text("_target_: ctsim.datasets.SEA\nslices: 5\nchange_points: [2]\n")
    args = ["--config-dir", str(tmp_path / "my_conf"), "--cfg", "job", "dataset=mysea"]
    done = cli(args, tmp_path)
    assert done.returncode == 2
    assert "dataset mysea has no default model (conf/model/fits/mysea.yaml): name one" in done.stderr
    named = cli([*args, "model=mlp"], tmp_path)
    assert named.returncode == 0, named.stderr
    assert "_target_: ctsim.models.MLP" in named.stdout


def test_configs_composed_one_after_another_equal_each_composed_alone():
    """ctsim keeps Hydra's parsed config files for the next compose (ctsim.app.compose.compose): a config
    composed after others must equal the same config composed in a fresh Hydra."""
    from hydra import compose as hydra_compose

    from ctsim.app.compose import compose as reusing

    cases = [[f"experiment={e.stem}"] for e in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    cases += [["selection/downsample=entropy", "selection.downsample.fraction=0.3"], ["model=cnn"]]
    alone = []
    for overrides in cases:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
            alone.append(OmegaConf.to_yaml(hydra_compose("config", overrides=overrides)))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        for _ in range(2):
            for overrides, expected in zip(cases, alone):
                assert OmegaConf.to_yaml(reusing("config", overrides=overrides)) == expected, overrides
