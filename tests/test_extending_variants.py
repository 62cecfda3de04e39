"""A user's own policy in a population (docs/extending.md, README "Experiments and populations"): a
misspelt argument of it in one variant is named like the same typo on the command line, after the
variant, with the nearest known key; before, the error said only that Hydra "could not override" it."""

from __future__ import annotations

from .conftest import REPO, cli, own_experiment

TRIGGER = '''
class EveryK:
    """Fires on every k-th arrival batch."""

    def __init__(self, k: int = 3):
        self.k = k

    def observe(self, ctx):
        return f"batch {ctx.batch.index}" if (ctx.batch.index + 1) % self.k == 0 else None
'''

EXPERIMENT = """# @package _global_
# My trigger against the time trigger.
defaults:
  - override /dataset: sea
name: mine
population:
  variants:
    every3: [trigger=every_k, trigger.kk=3]
    time: [trigger=time]
"""


def test_a_typo_in_a_variant_names_the_variant_and_the_nearest_key(tmp_path):
    root = own_experiment(tmp_path, "mine", EXPERIMENT)
    (root / "configs" / "trigger").mkdir()
    (root / "configs" / "trigger" / "every_k.yaml").write_text(
        "# Fire every k arrival batches.\n_target_: every_k.EveryK\nk: 3  # smaller: more training\n"
    )
    (root / "every_k.py").write_text(TRIGGER)
    done = cli(
        ["--config-dir", "configs", "experiment=mine", f"hydra.run.dir={tmp_path / 'run'}"],
        root,
        env={"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "ctsim: invalid config:",
        "  every3:trigger.kk: unknown key; did you mean trigger.k?",
    ]
    assert not (tmp_path / "run").exists()
