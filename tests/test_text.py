"""Text streams (HuffPost, arXiv) prepared from JSON-lines fixtures in their real formats, and model=bow."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from ctsim.datasets.prepare import main
from ctsim.datasets.prepared import fractional_year, read_cache
from ctsim.datasets.text import Arxiv, HuffPost, token_id, token_ids
from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.models import BagOfWords, ModelSpec
from ctsim.validation import ConfigError

from .conftest import REPO, build, run, small
from .test_engine_equivalence import ADAMS, SGDS, SGDS_F32, _assert_close, _jobs

YEARS = (2014, 2015, 2016, 2017)
COMMON = "the a of new today why how this week after"
HUFF_WORDS = {
    "SPORTS": "game team score coach season player win league match goal",
    "POLITICS": "senate vote election congress policy president bill campaign law party",
    "FOOD & DRINK": "recipe cook kitchen dinner flavor bake chef taste wine bread",
}
ARXIV_WORDS = {
    "cs.LG": "neural network training gradient learning model loss deep optimizer dataset",
    "math.CO": "graph combinatorial permutation partition vertex bound polynomial enumeration tree edge",
    "astro-ph.GA": "galaxy star stellar halo dark matter cluster redshift spectra disk",
}


def count(year_index: int, class_index: int) -> int:
    """Records of a year and class: unequal, so per-year and per-class counts say something."""
    return 20 + 5 * year_index + 7 * class_index


def sentence(rng: random.Random, words: list[str], k: int) -> str:
    chosen = rng.choices(words.split(), k=k) + rng.choices(COMMON.split(), k=2)
    rng.shuffle(chosen)
    return " ".join(w.capitalize() if rng.random() < 0.3 else w for w in chosen) + rng.choice(
        ["!", ".", ": 2 ways"]
    )


def huffpost_records(seed: int = 0) -> list[dict]:
    """News Category records as in News_Category_Dataset_v3.json, shuffled (the real file is newest first)."""
    rng = random.Random(seed)
    records = []
    for yi, year in enumerate(YEARS):
        for ci, (category, words) in enumerate(HUFF_WORDS.items()):
            for _ in range(count(yi, ci)):
                day = date(year, 1, 1) + timedelta(days=rng.randrange(365))
                records.append(
                    {
                        "link": f"https://www.huffpost.com/entry/{rng.getrandbits(32):x}",
                        "headline": sentence(rng, words, 4),
                        "category": category,
                        "short_description": sentence(rng, words, 6),
                        "authors": "A Writer",
                        "date": day.isoformat(),
                    }
                )
    rng.shuffle(records)
    return records


def created(moment: datetime) -> str:
    """arXiv's own way of writing a version's date: 'Mon, 2 Apr 2007 19:18:42 GMT'."""
    return f"{moment:%a}, {moment.day} {moment:%b %Y %H:%M:%S} GMT"


def arxiv_records(seed: int = 0) -> list[dict]:
    """Records as in arxiv-metadata-oai-snapshot.json. A third list a second category (another class's),
    and half have a v2 a year after v1: the label is the first category and the time v1's."""
    rng = random.Random(seed)
    labels = list(ARXIV_WORDS)
    records = []
    for yi, year in enumerate(YEARS):
        for ci, (label, words) in enumerate(ARXIV_WORDS.items()):
            for i in range(count(yi, ci)):
                v1 = datetime(year, 1, 1, tzinfo=timezone.utc) + timedelta(
                    seconds=rng.randrange(365 * 86400 - 1)
                )
                versions = [{"version": "v1", "created": created(v1)}]
                if i % 2:
                    versions.append({"version": "v2", "created": created(v1 + timedelta(days=366))})
                categories = f"{label} {labels[(ci + 1) % 3]}" if i % 3 == 0 else label
                records.append(
                    {
                        "id": f"{year % 100:02d}{yi:02d}.{len(records):05d}",
                        "submitter": "A Person",
                        "authors": "A. Person, B. Person",
                        "title": sentence(rng, words, 4),
                        "comments": "10 pages",
                        "journal-ref": None,
                        "doi": None,
                        "report-no": None,
                        "categories": categories,
                        "license": None,
                        "abstract": "  " + sentence(rng, words, 12) + "\n",
                        "versions": versions,
                        "update_date": v1.date().isoformat(),
                        "authors_parsed": [["Person", "A.", ""], ["Person", "B.", ""]],
                    }
                )
    rng.shuffle(records)
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def prepare(capsys, *argv: str) -> tuple[int, str, str]:
    """``ctsim datasets prepare ...`` in-process (fast): exit code, stdout, stderr."""
    code = main(["prepare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def padded(text: str, max_tokens: int = 64) -> list[int]:
    ids = token_ids(text, max_tokens)
    return ids + [0] * (max_tokens - len(ids))


@pytest.fixture(scope="module")
def huffpost(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A fixture file prepared once through the real command line, in a subprocess: (data root, records)."""
    tmp = tmp_path_factory.mktemp("huffpost")
    records = huffpost_records()
    source = write_jsonl(tmp / "News_Category_Dataset_v3.json", records)
    root = tmp / "datasets"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctsim.datasets",
            "prepare",
            "huffpost",
            "--from",
            str(source),
            "--root",
            str(root),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"huffpost: {len(records)} samples, 4 slices (2014 … 2017)" in done.stdout
    assert "the input was not in time order" in done.stdout
    return root, records


# --- preparing -----------------------------------------------------------------------------------------


def test_huffpost_cache_holds_every_record_in_time_order(huffpost):
    root, records = huffpost
    data, manifest = read_cache(root / "huffpost")
    expected = Counter(r["date"][:4] for r in records)
    assert manifest["counts_per_slice"] == {str(y): expected[str(y)] for y in YEARS}
    assert manifest["classes"] == ["FOOD & DRINK", "POLITICS", "SPORTS"]
    assert manifest["class_balance"] == dict(sorted(Counter(r["category"] for r in records).items()))
    assert manifest["input_shape"] == [64] and manifest["x_dtype"] == "int32"
    ordered = sorted(records, key=lambda r: r["date"])  # stable: ties keep the file's order
    assert data["y"].tolist() == [manifest["classes"].index(r["category"]) for r in ordered]
    assert data["x"].tolist() == [padded(r["headline"] + " " + r["short_description"]) for r in ordered]
    seconds = [datetime.fromisoformat(r["date"]).replace(tzinfo=timezone.utc).timestamp() for r in ordered]
    assert torch.equal(data["time"], fractional_year(torch.tensor(seconds, dtype=torch.float64)))
    assert data["slice"].tolist() == [YEARS.index(int(r["date"][:4])) for r in ordered]


def test_same_tokens_get_the_same_ids_in_every_process(huffpost):
    root, records = huffpost
    data, _ = read_cache(
        root / "huffpost"
    )  # written by another process, whose str hash() was salted otherwise
    first = sorted(records, key=lambda r: r["date"])[0]
    assert data["x"][0].tolist() == padded(first["headline"] + " " + first["short_description"])
    assert token_id("hello") == 722467  # golden: BLAKE2b of the word, the same on every run and machine
    assert token_ids("Coach, TEAM: win!", 8) == [token_id("coach"), token_id("team"), token_id("win")]
    assert len(set(token_ids(HUFF_WORDS["SPORTS"], 64))) == 10  # distinct words, distinct ids
    assert all(1 <= i < 2**20 for i in data["x"].flatten().tolist() if i)


def test_arxiv_labels_by_first_category_and_times_by_v1(tmp_path, capsys):
    records = arxiv_records()
    source = write_jsonl(tmp_path / "arxiv-metadata-oai-snapshot.json", records)
    code, _, err = prepare(capsys, "arxiv", "--from", source, "--root", tmp_path / "datasets")
    assert code == 0, err
    data, manifest = read_cache(tmp_path / "datasets" / "arxiv")
    v1 = [parse_created(r["versions"][0]["created"]) for r in records]
    assert manifest["counts_per_slice"] == {str(y): Counter(d.year for d in v1)[y] for y in YEARS}
    assert manifest["classes"] == ["astro-ph.GA", "cs.LG", "math.CO"]
    assert manifest["class_balance"] == dict(
        sorted(Counter(r["categories"].split()[0] for r in records).items())
    )
    order = sorted(range(len(records)), key=lambda i: v1[i])
    assert data["y"].tolist() == [
        manifest["classes"].index(records[i]["categories"].split()[0]) for i in order
    ]
    assert data["x"].tolist() == [padded(records[i]["title"] + " " + records[i]["abstract"]) for i in order]
    seconds = torch.tensor([v1[i].timestamp() for i in order], dtype=torch.float64)
    assert torch.equal(data["time"], fractional_year(seconds))


def parse_created(text: str) -> datetime:
    return datetime.strptime(text, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)


def test_options_slice_by_month_max_tokens_limit_and_min_class_count(tmp_path, capsys):
    records = huffpost_records()
    source = write_jsonl(tmp_path / "news.json", records)
    root = tmp_path / "datasets"
    code, out, err = prepare(capsys, "huffpost", "--from", source, "--root", root, "--slice-by", "month")
    assert code == 0, err
    _, manifest = read_cache(root / "huffpost")
    assert manifest["counts_per_slice"] == dict(sorted(Counter(r["date"][:7] for r in records).items()))
    assert manifest["options"]["slice_by"] == "month"

    code, out, err = prepare(
        capsys, "huffpost", "--from", source, "--root", root, "--max-tokens", "3", "--limit", "50"
    )
    assert code == 0, err
    data, manifest = read_cache(root / "huffpost")
    assert data["x"].shape == (50, 3) and "read only the first 50 records" in out
    assert "have more than 3 tokens" in out
    ordered = sorted(records[:50], key=lambda r: r["date"])
    assert data["x"].tolist() == [padded(r["headline"] + " " + r["short_description"], 3) for r in ordered]

    # SPORTS has 110 records, POLITICS 138 and FOOD & DRINK 166: K = 120 leaves SPORTS out
    code, out, err = prepare(capsys, "huffpost", "--from", source, "--root", root, "--min-class-count", "120")
    assert code == 0, err
    data, manifest = read_cache(root / "huffpost")
    assert manifest["classes"] == ["FOOD & DRINK", "POLITICS"] and len(data["y"]) == 138 + 166
    assert "left out 110 records of 1 categories" in out


def huffpost_line(**change) -> str:
    record = {"headline": "Win!", "category": "SPORTS", "short_description": "", "date": "2018-05-26"}
    record.update(change)
    return json.dumps({k: v for k, v in record.items() if v is not None})


ARXIV_OK = json.dumps(arxiv_records()[0])
BAD = {
    "empty file": ("huffpost", "", "an empty file"),
    "not JSON": (
        "huffpost",
        f"{huffpost_line()}\n\n{{'category': 'SPORTS'\n",
        "line 3: expected one JSON object",
    ),
    "not an object": ("huffpost", "[1, 2]\n", "line 1: expected one JSON object per line"),
    "no date": (
        "huffpost",
        f"{huffpost_line()}\n{huffpost_line(date=None)}\n",
        'line 2: expected a field "date"',
    ),
    "bad date": (
        "huffpost",
        f"{huffpost_line()}\n{huffpost_line(date='2018-13-45')}\n",
        'line 2: expected a field "date": a date like "2018-05-26", found \'2018-13-45\'',
    ),
    "no category": ("huffpost", huffpost_line(category=None), 'line 1: expected a field "category"'),
    "number as headline": (
        "huffpost",
        huffpost_line(headline=3),
        'line 1: expected a field "headline": a string',
    ),
    "no versions": (
        "arxiv",
        f"{ARXIV_OK}\n{json.dumps({**json.loads(ARXIV_OK), 'versions': []})}\n",
        'line 2: expected a field "versions": a list whose first version has "created"',
    ),
    "bad created": (
        "arxiv",
        f"{json.dumps({**json.loads(ARXIV_OK), 'versions': [{'version': 'v1', 'created': 'yesterday'}]})}\n",
        'line 1: expected a "created" date like "Mon, 2 Apr 2007 19:18:42 GMT" (RFC 2822), '
        "found 'yesterday'",
    ),
    "no abstract": (
        "arxiv",
        json.dumps({k: v for k, v in json.loads(ARXIV_OK).items() if k != "abstract"}),
        "line 1: expected a field \"abstract\": a string, found no 'abstract'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_line_and_expectation_and_writes_nothing(tmp_path, capsys, case):
    name, text, message = BAD[case]
    source = tmp_path / "input.json"
    source.write_text(text)
    root = tmp_path / "datasets"
    code, out, err = prepare(capsys, name, "--from", source, "--root", root)
    assert code == 2 and out == ""
    assert f"error: {source}: " in err and message in err
    assert not root.exists() or not list(root.iterdir())  # no cache, no temporary folder


def test_missing_path_and_failed_prepare_keep_an_earlier_cache(huffpost, tmp_path, capsys):
    root, _ = huffpost
    missing = tmp_path / "nowhere.json"
    code, _, err = prepare(capsys, "huffpost", "--from", missing, "--root", tmp_path / "datasets")
    assert code == 2 and f"{missing}: no such file" in err and "News Category Dataset" in err
    assert not (tmp_path / "datasets").exists()

    before = (root / "huffpost" / "manifest.json").read_bytes()
    bad = write_jsonl(tmp_path / "bad.json", huffpost_records()[:5])
    bad.write_text(bad.read_text() + "not json\n")
    code, _, err = prepare(capsys, "huffpost", "--from", bad, "--root", root)
    assert code == 2 and f"{bad}: line 6" in err
    assert (root / "huffpost" / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["huffpost"]


# --- replaying and model=bow -----------------------------------------------------------------------------


def test_dataset_replays_the_cache_as_float_ids_and_takes_size(huffpost):
    root, _ = huffpost
    ds = HuffPost(root=str(root))
    samples = ds.load()
    data, _ = read_cache(root / "huffpost")
    assert ds.model == "bow" and ds.input_shape == (64,) and ds.num_classes == 3
    assert samples.x.dtype == torch.float32 and torch.equal(samples.x.long(), data["x"].long())
    assert samples.slice_labels == ["2014", "2015", "2016", "2017"] and samples.num_classes == 3
    half = HuffPost(root=str(root), size=0.5).load()
    per_slice = torch.bincount(half.slice).tolist()
    full = torch.bincount(samples.slice).tolist()
    assert per_slice == [round(n / 2) for n in full]
    assert Arxiv(root=str(root)).path_problems()  # nothing prepared for arxiv there


def test_bow_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"input_shape=\(1, 32, 32\): expected \(max tokens,\)"):
        BagOfWords((1, 32, 32), 2)
    with pytest.raises(ConfigError) as info:
        BagOfWords((8,), 3, buckets=1, dim=0, hidden=[0])
    assert [p.key for p in info.value.problems] == ["buckets", "dim", "hidden"]


def test_bow_pools_over_real_tokens_only():
    net = BagOfWords((5,), 2, buckets=11, dim=3).double()
    ids = torch.tensor(
        [[4.0, 25.0, 0.0, 0.0, 0.0], [4.0, 25.0, 4.0, 25.0, 0.0], [0.0] * 5], dtype=torch.float64
    )
    rows = net.embedding.weight
    pooled = net.embed(ids)
    torch.testing.assert_close(pooled[0], (rows[4] + rows[1 + 24 % 10]) / 2)  # id 25 shares bucket 5
    torch.testing.assert_close(pooled[1], pooled[0])  # a mean: repeating the text changes nothing
    assert torch.equal(pooled[2], torch.zeros(3, dtype=torch.float64))  # padding alone


def bow_spec(max_tokens: int = 64) -> ModelSpec:
    return ModelSpec(partial(BagOfWords, buckets=257, dim=8, hidden=[8]), (max_tokens,), 3)


@pytest.mark.parametrize("route", ["vmap", "loop"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bow_batched_engine_equals_sequential(huffpost, route, dtype):
    root, _ = huffpost
    samples = HuffPost(root=str(root)).load()
    x = samples.x.to(torch.float64 if dtype == "float64" else torch.float32)
    spec = bow_spec()
    optimizers = [SGDS[0], ADAMS[1], SGDS[2], ADAMS[3]] if dtype == "float64" else SGDS_F32
    jobs = _jobs(spec, optimizers, n_data=len(x))
    seq = SequentialEngine(device="cpu", dtype=dtype).train(jobs, x, samples.y)
    bat = BatchedEngine(device="cpu", dtype=dtype, route=route).train(jobs, x, samples.y)
    start = spec.build(seed=jobs[0].seed).state_dict()
    for job, s, b in zip(jobs, seq, bat):
        assert s.steps == b.steps == job.steps() >= 100 and s.status == b.status == "ok"
        assert s.state.keys() == b.state.keys() == start.keys()
        for k in s.state:
            _assert_close(b.state[k], s.state[k], dtype, f"bow job {job.pipeline} {k}")
    assert not torch.equal(seq[0].state["embedding.weight"].float(), start["embedding.weight"])  # it trained


def test_bow_learns_the_fixture(huffpost):
    root, _ = huffpost
    s = HuffPost(root=str(root)).load()
    test = torch.arange(len(s.y)) % 5 == 0
    torch.manual_seed(0)
    net = BagOfWords((64,), 3, buckets=1024, dim=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(5):
        for rows in torch.randperm(int((~test).sum())).split(32):
            optimizer.zero_grad()
            F.cross_entropy(net(s.x[~test][rows]), s.y[~test][rows]).backward()
            optimizer.step()
    accuracy = float((net(s.x[test]).argmax(1) == s.y[test]).float().mean())
    assert accuracy > 0.9  # chance: about 0.4


# --- running -------------------------------------------------------------------------------------------


def test_huffpost_runs_end_to_end_with_bow(huffpost, tmp_path):
    root, _ = huffpost
    overrides = small(tmp_path, "dataset=huffpost", f"dataset.root={root}", "model=bow", "train.epochs=2")
    overrides += ["population.variants={}", "optimizer=adam", "optimizer.lr=0.05", "output.checkpoints=none"]
    outcome = run(overrides, tmp_path / "out")
    generations = outcome.tables["generations"]
    assert generations.height == 4  # one model a year (trigger=time, every slice)
    evals = outcome.tables["evals"].filter(pl.col("metric") == "accuracy")
    assert sorted(set(evals["slice_label"].to_list())) == ["2014", "2015", "2016", "2017"]
    last = evals.filter(pl.col("generation") == generations["generation"].max())
    assert last["value"].mean() > 0.8  # the words tell the classes apart: chance is about 0.4


ONE = ["population.variants={}"]  # one pipeline: the model is checked once


def test_a_model_of_numbers_on_token_ids_is_refused_and_bow_on_numbers_too(huffpost, tmp_path):
    """Shapes let model=mlp take a row of token ids (and model=bow a row of features), and it would train
    on ids as magnitudes: the run stops before any work, naming the model that fits."""
    root, _ = huffpost
    with pytest.raises(ConfigError) as e:
        build(small(tmp_path, "dataset=huffpost", f"dataset.root={root}", "model=mlp", *ONE))
    assert "model='ctsim.models.MLP': expected a model that takes rows of token ids" in str(e.value)
    assert "dataset huffpost fits model=bow" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build(small(tmp_path, "dataset=sea", "model=bow", *ONE))
    assert "model='ctsim.models.BagOfWords': expected a model that takes numbers" in str(e.value)
    assert "dataset sea fits model=mlp" in str(e.value)


def test_missing_cache_names_the_source_and_the_prepare_command(tmp_path):
    for name, source in (
        ("huffpost", "News_Category_Dataset_v3.json"),
        ("arxiv", "arxiv-metadata-oai-snapshot.json"),
    ):
        with pytest.raises(ConfigError) as e:
            build(small(tmp_path, f"dataset={name}", "model=bow", "population.variants={}"))
        text = str(e.value)
        assert f"no prepared cache at {tmp_path / 'datasets' / name}" in text and "Kaggle" in text
        assert f"ctsim datasets prepare {name} --from {source} --root {tmp_path / 'datasets'}" in text
