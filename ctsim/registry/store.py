"""A run folder, written as the run goes, so that a crash or a kill loses nothing that was finished.

* ``status.json`` is the run's record (its row of the ``runs`` table): status (``running``,
  ``finished``, ``failed`` or ``interrupted``), times, command, config and its hash, code, versions,
  device, seeds (:mod:`ctsim.registry.provenance`). The run replaces it, atomically, as it goes.
* ``journal/`` holds what is finished so far. After every decision point that trained, each new
  generation's checkpoint is written, then one part file with the generations' rows and sample keys:
  that part is the commit, so a generation counts as saved only once its checkpoint is on disk. After
  every chunk of evaluations, one part file with their rows.
* The final tables (``evals.parquet``, ...) are written once the run ends; then ``output.checkpoints``
  prunes the checkpoints (every generation's is kept until then, so a killed run can resume), and the
  journal is removed.

Every file is written to a temporary name and renamed into place, so a reader (or a resume) sees a
file whole or not at all. :class:`RunStore` is the :class:`~ctsim.simulation.Recorder` a run writes
through; on resume it also answers what an earlier attempt saved.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ctsim.datasets.prepared import sha256 as file_sha256
from ctsim.engine.base import Trained
from ctsim.measure.evaluation import Metrics
from ctsim.registry.layout import JOURNAL, METRICS, STATUS, TABLES, read_status
from ctsim.registry.tables import Saved, eval_rows, generation_rows, lineage_rows
from ctsim.simulation import Generation, Pipeline
from ctsim.stream import Stream

EVAL_SECONDS = "eval_s"  # the journal's evaluation parts: seconds attributed to the row's generation
TRAINED_SCORED = "trained_scored"  # the journal's generation parts: samples scored during training


class ResumeError(Exception):
    """The run cannot be resumed exactly; the message says why and what to do."""


def write_new(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file that must not exist yet, atomically (a temp file renamed into place)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists: it belongs to another run and is left untouched")
    write_atomic(path, write)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file renamed into place: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tables(tables: Mapping[str, pl.DataFrame], out_dir: Path) -> list[Path]:
    paths = []
    for name, frame in tables.items():
        path = out_dir / f"{name}.parquet"
        write_new(path, frame.write_parquet)
        paths.append(path)
    return paths


def write_status(out_dir: Path, status: str, **fields: object) -> dict:
    """Update ``status.json`` (atomically) with ``fields`` and the new status; the record written."""
    record = read_status(out_dir) or {"started": now()}
    record.update(fields, status=status, updated=now())
    if status == "running":
        record.pop("ended", None)
    else:
        record["ended"] = record["updated"]
    text = json.dumps(record, indent=2, default=str) + "\n"
    write_atomic(out_dir / STATUS, lambda p: p.write_text(text))
    return record


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint: plain tensors, read with ``weights_only=True`` (no pickled code runs)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_path(pipeline: Pipeline, generation: int) -> str:
    """Where a generation's checkpoint lives, relative to the run folder."""
    return f"checkpoints/{pipeline.name}/seed{pipeline.seed}/gen{generation:04d}.pt"


class RunStore:
    """The journal of one run: what it writes as it goes, and (on resume) what was saved before.

    ``stream`` and ``pipelines`` are the run's, so generation rows can name their pipeline, seed and
    slices.
    """

    def __init__(self, out_dir: Path, stream: Stream, pipelines: Sequence[Pipeline]):
        self.out_dir = Path(out_dir)
        self.journal = self.out_dir / JOURNAL
        self.stream, self.pipelines = stream, list(pipelines)
        self._index = {(p.name, p.seed): i for i, p in enumerate(self.pipelines)}
        self._saved: dict[tuple[int, int], dict] = {}  # (pipeline index, generation) → its journal row
        self._evals: dict[int, pl.DataFrame] = {}  # evaluation chunk → its rows
        self._parts = 0  # evaluation chunks seen so far (their file names)
        self.retrained: list[str] = []  # checkpoints found missing or corrupt, and trained again
        self.reused = 0  # generations loaded instead of trained
        self.trained = 0  # generations trained (and saved) by this attempt
        if self.journal.is_dir():
            self._read_journal()
        elif (self.out_dir / "generations.parquet").is_file() and (
            self.out_dir / "lineage.parquet"
        ).is_file():
            self._read_tables()  # a finished run (to reproduce a generation of it)

    # -- what an earlier attempt saved ------------------------------------------------------------

    def _read_tables(self) -> None:
        gens = pl.read_parquet(self.out_dir / "generations.parquet")
        keys = pl.read_parquet(self.out_dir / "lineage.parquet").select(
            "pipeline", "seed", "generation", "keys"
        )
        rows = gens.join(keys, on=["pipeline", "seed", "generation"], how="left").with_columns(
            pl.lit(0, dtype=pl.Int64).alias(TRAINED_SCORED)  # tables keep the sum with selection's
        )
        self._add(rows, self.out_dir / "generations.parquet")

    def _add(self, rows: pl.DataFrame, source: Path) -> None:
        # the keys as tensors, not Python lists: a run's lineage can hold millions of them
        for row, keys in zip(rows.drop("keys").iter_rows(named=True), rows["keys"]):
            row["keys"] = torch.from_numpy(keys.to_numpy().astype(np.int64))
            where = self._index.get((row["pipeline"], row["seed"]))
            if where is None:
                raise ResumeError(
                    f"{source}: pipeline {row['pipeline']!r} seed {row['seed']} is not one of this run's "
                    "pipelines: the run folder belongs to another config"
                )
            self._saved[(where, row["generation"])] = row

    def row(self, pipeline: int, generation: int) -> dict | None:
        """The saved row of a generation (its generations columns and ``keys``), or None."""
        return self._saved.get((pipeline, generation))

    def _read_journal(self) -> None:
        for part in sorted(self.journal.glob("point-*.parquet")):
            self._add(pl.read_parquet(part), part)
        for part in sorted(self.journal.glob("eval-*.parquet")):
            self._evals[int(part.stem.removeprefix("eval-"))] = pl.read_parquet(part)

    def saved(self, pipeline: int, generation: int, keys: torch.Tensor) -> Trained | None:
        """The generation as an earlier attempt saved it, or None if it must be trained.

        The replay must have chosen the same samples (else it diverged, and nothing after can be
        trusted). A checkpoint that is missing or fails its SHA-256 is trained again, with a warning.
        """
        row = self._saved.get((pipeline, generation))
        if row is None:
            return None
        p = self.pipelines[pipeline]
        if not torch.equal(row["keys"], keys.cpu().long()):
            raise ResumeError(
                f"{p.name} seed {p.seed} generation {generation}: the replay chose other training samples "
                f"than the saved run ({len(keys)} against {len(row['keys'])}); the run cannot be resumed "
                "exactly. Start it again."
            )
        path = self.out_dir / (row["checkpoint"] or checkpoint_path(p, generation))
        found = file_sha256(path) if path.is_file() else None
        if found != row["checkpoint_sha256"]:
            why = "is missing" if found is None else "does not match its SHA-256 in the journal (corrupt)"
            warnings.warn(f"checkpoint {path} {why}: generation {generation} is trained again", stacklevel=2)
            self.retrained.append(str(path))
            return None
        self.reused += 1
        return Trained(
            state=load_state(path),
            steps=row["optimizer_steps"],
            samples=row["samples_trained"],
            seconds=row["train_s"],
            loss=row["final_loss"],
            status=row["status"],
            scored=row[TRAINED_SCORED],
        )

    # -- writing as the run goes -----------------------------------------------------------------

    def record(self, gens: Sequence[Generation]) -> None:
        """One decision point's generations: checkpoints first, then the part that commits them."""
        if not gens:
            return
        saved: dict[tuple[int, int], tuple[str, str]] = {}
        for gen in gens:
            rel = checkpoint_path(self.pipelines[gen.pipeline], gen.index)
            path = self.out_dir / rel
            row = self._saved.get((gen.pipeline, gen.index))
            if row is not None and path.is_file() and file_sha256(path) == row["checkpoint_sha256"]:
                saved[(gen.pipeline, gen.index)] = (rel, row["checkpoint_sha256"])
                continue
            buffer = io.BytesIO()
            torch.save(gen.trained.state, buffer)
            data = buffer.getvalue()
            write_atomic(path, lambda p, data=data: p.write_bytes(data))
            saved[(gen.pipeline, gen.index)] = (rel, hashlib.sha256(data).hexdigest())
            self.trained += 1
        rows = generation_rows(self.stream, self.pipelines, gens, saved)
        rows = rows.with_columns(
            pl.Series(TRAINED_SCORED, [g.trained.scored for g in gens], dtype=pl.Int64),
            lineage_rows(self.pipelines, gens)["keys"],
        )
        write_atomic(self.journal / f"point-{gens[0].batch.index:06d}.parquet", rows.write_parquet)
        for gen, row in zip(gens, rows.drop("keys").iter_rows(named=True)):
            self._saved[(gen.pipeline, gen.index)] = {**row, "keys": gen.selection.keys}

    def checkpoints(self) -> Saved:
        """Every saved generation's checkpoint and its SHA-256."""
        return {k: (row["checkpoint"], row["checkpoint_sha256"]) for k, row in self._saved.items()}

    def saved_evaluation(self, gens: Sequence[Generation]) -> tuple[Metrics, torch.Tensor] | None:
        """The next evaluation chunk (``gens``), as an earlier attempt saved it (every metric's matrix and
        each generation's seconds), or None."""
        index = self._parts
        part = self._evals.get(index)
        self._parts += 1
        if part is None:
            return None
        ids = [(self.pipelines[g.pipeline].name, self.pipelines[g.pipeline].seed, g.index) for g in gens]
        found = part.select("pipeline", "seed", "generation").unique(maintain_order=True).rows()
        if found != ids:
            return None  # another chunk than this replay evaluates: evaluate it again
        missing = [m for m in METRICS if m not in set(part["metric"])]
        if missing:
            path = self.journal / f"eval-{index:05d}.parquet"
            raise ResumeError(
                f"{path} has no {', '.join(missing)} rows: an older ctsim wrote it, and this one cannot "
                "resume it. Start the run again."
            )
        metrics = {}
        for metric in METRICS:
            values = part.filter(pl.col("metric") == metric)["value"].fill_null(float("nan"))
            metrics[metric] = torch.tensor(values.to_list(), dtype=torch.float64).reshape(
                len(gens), self.stream.num_slices
            )
        first = part.filter(pl.col("metric") == METRICS[0], pl.col("slice") == 0)
        seconds = torch.tensor(first[EVAL_SECONDS].to_list(), dtype=torch.float64)
        return metrics, seconds

    def record_evaluation(
        self, gens: Sequence[Generation], metrics: Metrics, n: torch.Tensor, seconds: torch.Tensor
    ) -> None:
        """One evaluation chunk (every metric's matrix), written as it is computed."""
        rows = eval_rows(self.stream, self.pipelines, gens, metrics, n)
        per_row = [float(s) for s in seconds for _ in range(len(METRICS) * len(n))]  # metrics × slices each
        rows = rows.with_columns(pl.Series(EVAL_SECONDS, per_row, dtype=pl.Float64))
        write_atomic(self.journal / f"eval-{self._parts - 1:05d}.parquet", rows.write_parquet)

    # -- the end of the run ----------------------------------------------------------------------

    def kept(self, which: str) -> Saved:
        """The checkpoints ``output.checkpoints`` keeps once the run ends (``all``, each pipeline's
        ``last``, or ``none``); the others' paths are None. Each generation's SHA-256 stays."""
        last = {p: g for p, g in sorted(self._saved)}
        return {
            (p, g): (rel if which == "all" or (which == "last" and last[p] == g) else None, sha)
            for (p, g), (rel, sha) in self.checkpoints().items()
        }

    def prune(self, which: str) -> None:
        """Delete the checkpoints :meth:`kept` does not keep (once the run's tables are written)."""
        every = self.checkpoints()
        for key, (rel, _) in self.kept(which).items():
            if rel is None:
                (self.out_dir / every[key][0]).unlink(missing_ok=True)
        _remove_empty_folders(self.out_dir / "checkpoints")

    def close(self) -> None:
        """Remove the journal once the final tables are written."""
        shutil.rmtree(self.journal, ignore_errors=True)


def _remove_empty_folders(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def clear_outputs(out_dir: Path) -> None:
    """Before a resume: remove what an earlier attempt derived at its end (final tables, plots, summary),
    which the resume writes again from the journal, and temporary files a kill left behind."""
    for name in TABLES:
        (out_dir / f"{name}.parquet").unlink(missing_ok=True)
    (out_dir / "summary.md").unlink(missing_ok=True)
    shutil.rmtree(out_dir / "plots", ignore_errors=True)
    for tmp in out_dir.rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)
