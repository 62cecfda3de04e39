"""The engine's settings as a user gives them: on the command line, in ``--help`` and to ``ctsim bench``.

Each bad value is refused with one message that names the option and what it takes, before any work.
"""

from __future__ import annotations

import pytest
import torch

from ctsim.app.bench import main as bench
from ctsim.app.cli import CONF_DIR
from ctsim.validation import ConfigError

from .conftest import build, cli, small

SEA = ["dataset=sea", "dataset.size=0.1", "dataset.slices=6", "dataset.change_points=[3]"]


def test_a_fractional_memory_budget_above_one_is_refused_not_read_as_one_byte(tmp_path):
    with pytest.raises(ConfigError, match=r"engine\.memory_budget=1\.5: .*1\.5 would mean 1 byte, not 150%"):
        build(small(tmp_path, *SEA, "engine.memory_budget=1.5"))
    # a whole number of bytes, written as a float, and a fraction still mean what the docs say
    assert build(small(tmp_path, *SEA, "engine.memory_budget=2e9")).engine.memory.bytes() == 2_000_000_000
    assert build(small(tmp_path, *SEA, "engine.memory_budget=1.0")).engine.memory.budget == 1.0


def test_every_note_of_an_engine_option_file_reaches_the_help(tmp_path):
    """A note that continues on a comment line of its own was cut from ``--help`` (engine.route read
    "auto: vmap on GPUs; on CPUs" and stopped there)."""
    for engine in ("batched", "sequential"):
        shown = cli(["--help", f"engine={engine}"], cwd=tmp_path).stdout
        notes = []
        for line in (CONF_DIR / "engine" / f"{engine}.yaml").read_text().splitlines()[2:]:
            code, _, note = line.partition("#")
            if note.strip() and not code.startswith("_target_"):
                notes.append(note.strip())  # a key's note, or a comment line under it
        assert notes and all(note in shown for note in notes), engine


def _refused(capsys, tmp_path, *args: str) -> str:
    """``ctsim bench ARGS``'s usage error (exit status 2); nothing was measured or written."""
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as info:
        bench([*args, "--out", str(out)])
    assert info.value.code == 2 and not out.exists()
    return capsys.readouterr().err


def test_bench_names_every_bad_count_before_it_runs_a_case(capsys, tmp_path):
    err = _refused(capsys, tmp_path, "--cases", "launch", "ragged", "--models", "1", "0", "--repeats", "0")
    assert "argument --models: expected integers ≥ 1, got 0" in err
    assert "argument --repeats: expected an integer ≥ 1, got 0" in err
    err = _refused(capsys, tmp_path, "--cases", "eval", "--eval-models", "0", "--eval-samples", "-5")
    assert "--eval-models: expected an integer ≥ 1, got 0" in err and "--eval-samples" in err


def test_bench_names_a_misspelt_compile_backend(capsys, tmp_path):
    err = _refused(capsys, tmp_path, "--cases", "compile", "--compile-backend", "inducto")
    assert (
        "argument --compile-backend: 'inducto' is not a torch.compile backend; did you mean 'inductor'?"
        in err
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_bench_on_cuda_without_a_gpu_says_so_in_one_line(capsys, tmp_path):
    err = _refused(capsys, tmp_path, "--device", "cuda", "--cases", "launch")
    assert "argument --device: cuda, but this machine has no CUDA device" in err
    assert "Traceback" not in err
