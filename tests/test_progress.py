"""Progress bars as a user sees them: on a terminal (also one that reports a size of 0×0), never in a pipe,
never with progress off, and without changing any result."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from .conftest import REPO

# A tiny simulation: two pipelines, six slices; prints a result digest so runs can be compared.
SCRIPT = """
import sys
from functools import partial
from ctsim.engine import BatchedEngine, TrainConfig
from ctsim.models import MLP, ModelSpec
from ctsim.engine.optim import SGD
from ctsim.engine.schedules import Constant
from ctsim.selection import AllData
from ctsim.simulation import Pipeline, simulate
from ctsim.stream import toy_stream
from ctsim.triggers import TimeTrigger

stream = toy_stream([40] * 6, test_fraction=0.25)
model = ModelSpec(partial(MLP, hidden=[8]), (1, 4, 4), 2)
pipelines = [
    Pipeline(f"every{k}", 0, TimeTrigger(every=k), AllData(), model, SGD(lr=0.1),
             TrainConfig(epochs=1, batch_size=16), Constant())
    for k in (1, 2)
]
result = simulate(stream, pipelines, BatchedEngine(device="cpu"), progress=sys.argv[1] == "on")
print("digest", len(result.generations), repr(result.evaluation.accuracy.nansum().item()))
"""
BAR_TEXT = ("replay", "evaluate", "samples/s", "%|")


def env() -> dict[str, str]:
    """The user's environment, less anything that would size or silence tqdm for it."""
    return {
        k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES") and not k.startswith("TQDM_")
    }


def on_pty(progress: str, rows: int = 0, columns: int = 0, timeout: float = 120) -> str:
    """Run SCRIPT with stdin, stdout and stderr on a pseudo-terminal of ``rows``×``columns``; its output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, progress], stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env()
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        else:
            pytest.fail(f"no EOF on the terminal within {timeout} s")
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def frames(output: str, name: str) -> list[str]:
    """Every drawing of the bar ``name`` (tqdm redraws a line after a carriage return)."""
    return [f for f in re.split(r"[\r\n]", output) if f.startswith(f"{name}:")]


def digest(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("digest"))


@pytest.fixture(scope="module")
def quiet_on_pty() -> str:
    return on_pty("off")


@pytest.mark.parametrize("rows, columns", [(0, 0), (40, 120)], ids=["0x0", "40x120"])
def test_a_terminal_shows_the_replay_and_evaluation_bars(rows, columns, quiet_on_pty):
    output = on_pty("on", rows, columns)
    replay, evaluate = frames(output, "replay"), frames(output, "evaluate")
    width = columns - 1 if columns else 79  # tqdm keeps the last column free; 0 columns: 80 assumed
    assert replay and evaluate and all(len(f.rstrip()) <= width for f in replay + evaluate)
    assert any("training 1 job" in f for f in replay) and any("training 2 jobs" in f for f in replay)
    assert any("samples/s, 6 generations, 2 pipelines" in f for f in replay)  # after slice 3: 4 + 2
    assert any(re.search(r" 9/9 \[.*, [\d.]+[kMGTP]? samples/s\]$", f.rstrip()) for f in evaluate)
    assert digest(output) == digest(quiet_on_pty)  # the bars change no result


def test_a_pipe_gets_no_bar(quiet_on_pty):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "on"], capture_output=True, text=True, cwd=REPO, env=env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert not any(text in result.stderr for text in BAR_TEXT), result.stderr
    assert digest(result.stdout) == digest(quiet_on_pty)


def test_progress_off_shows_no_bar_on_a_terminal(quiet_on_pty):
    assert "digest" in quiet_on_pty
    assert not any(text in quiet_on_pty for text in BAR_TEXT), quiet_on_pty
