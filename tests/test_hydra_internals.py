"""Hydra's private parts that ctsim relies on (``ctsim/app/hydra_internals.py``): if a Hydra release
changes them, these fail, naming what changed, instead of ctsim misreading a command line."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from ctsim.app.compose import CONF_DIR
from ctsim.app.hydra_internals import args_parser, locate, reuse_parsed_configs, sweep_jobs


def test_hydras_command_line_parser_reads_what_ctsim_reads():
    argv = ["-m", "--cfg", "job", "--config-dir", "mine", "trigger=drift", "train.epochs=1,2"]
    args = args_parser().parse_args(argv)
    assert args.multirun and args.cfg == "job" and args.config_dir == "mine"
    assert args.overrides == ["trigger=drift", "train.epochs=1,2"]
    for flag in ("help", "hydra_help", "info", "shell_completion", "experimental_rerun", "config_name"):
        assert hasattr(args, flag), f"Hydra's parser no longer sets {flag}"


def test_the_basic_sweepers_expansion_is_the_cartesian_product_in_order():
    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y", "c=3"])
    assert sweep_jobs(parsed) == [
        ["a=1", "b=x", "c=3"],
        ["a=1", "b=y", "c=3"],
        ["a=2", "b=x", "c=3"],
        ["a=2", "b=y", "c=3"],
    ]


def test_parsed_config_files_are_reused_and_never_shared(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="t"):
        assert reuse_parsed_configs(), "Hydra's config repository is no longer where ctsim looks for it"
        repo = GlobalHydra.instance().hydra.config_loader.repository
        assert type(repo).reuses_parsed_configs
        one = compose("config", overrides=["train.epochs=7"])
        two = compose("config")
        assert (one.train.epochs, two.train.epochs) == (7, 3)  # a compose's overrides never leak
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="t"):
        fresh = GlobalHydra.instance().hydra.config_loader.repository
        assert not getattr(type(fresh), "reuses_parsed_configs", False)  # a new initialisation, a new cache


def test_a_target_is_located_and_a_missing_one_raises_without_logging():
    from ctsim.triggers import TimeTrigger

    assert locate("ctsim.triggers.TimeTrigger") is TimeTrigger
    try:
        locate("ctsim.triggers.NoSuchTrigger")
    except ImportError as e:
        assert "NoSuchTrigger" in str(e)
    else:
        raise AssertionError("Hydra's _locate no longer raises ImportError for a missing target")
