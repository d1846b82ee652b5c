"""The read-only store: saved runs and sweeps read back without training code, corrupt files as
one-line errors naming the file, and algorithm names the code no longer knows read as they are."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from fedpdmm import report, results, store, sweep
from fedpdmm.errors import ConfigError, FedpdmmError

TRAINING_MODULES = (
    "torch",
    "fedpdmm.engine",
    "fedpdmm.algorithms",
    "fedpdmm.aggregators",
    "fedpdmm.attacks",
    "fedpdmm.local",
    "fedpdmm.models",
    "fedpdmm.data",
    "fedpdmm.experiment",
)


def metrics_rows(algorithm: str, attack: str, final: float) -> list[dict]:
    """Rounds 0 and 5 of one combination: accuracy 0.1, then `final`."""
    return [
        {
            "algorithm": algorithm,
            "attack": attack,
            "target": "none" if attack == "none" else "message",
            "round": rnd,
            "test_accuracy": accuracy,
            "test_loss": 1.0,
            "num_byzantine": 0 if attack == "none" else 2,
            "wall_time": 0.0,
        }
        for rnd, accuracy in ((0, 0.1), (5, final))
    ]


def write_sweep(root: Path, algorithms: tuple[str, ...] = ("pdmm", "fedavg")) -> list[str]:
    """A sweep over `data.alpha` x 2 seeds written by hand (no planning, no training code): its
    base config names `algorithms`; returns the run names in grid order."""
    names = ", ".join(f'"{name}"' for name in algorithms)
    root.mkdir(parents=True)
    (root / store.SWEEP_FILE).write_text(
        'grid = [["data.alpha", [0.1, 1.0]], ["seed", [0, 1]]]\n\n'
        f"[config]\nseed = 0\nalgorithms = [{names}]\n\n[config.data]\nnum_clients = 10\n"
    )
    runs = []
    for alpha in (0.1, 1.0):
        for seed in (0, 1):
            name = store.run_name({"data.alpha": alpha, "seed": seed})
            (root / name).mkdir()
            rows = [
                row
                for index, algorithm in enumerate(algorithms)
                for attack in ("none", "sign_flip")
                for row in metrics_rows(algorithm, attack, 0.5 + 0.1 * index + 0.02 * seed)
            ]
            results.write_metrics(root / name / store.METRICS_FILE, rows)
            runs.append(name)
    return runs


# ---------------------------------------------------------------------------- no training code


def test_reading_and_reporting_import_no_training_code(tmp_path: Path) -> None:
    write_sweep(tmp_path / "sweep")
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import fedpdmm.store, fedpdmm.report, fedpdmm.reproduce, fedpdmm.sweep
        from fedpdmm import report
        report.write_report(Path({str(tmp_path / "sweep")!r}))
        print(" ".join(m for m in {TRAINING_MODULES!r} if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    assert (tmp_path / "sweep" / "report" / "report.md").is_file()


def test_an_algorithm_name_the_code_does_not_know_is_reported_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_sweep(root, algorithms=("pdmm_v0_renamed", "fedavg"))
    with pytest.raises(ConfigError, match="pdmm_v0_renamed"):
        sweep.load_plan(root)  # planning checks names against the registry; reading does not
    found = report.cells(report.load_results(root))
    assert {cell.algorithm for cell in found} == {"pdmm_v0_renamed", "fedavg"}
    markdown = (report.write_report(root) / "report.md").read_text()
    assert "| pdmm_v0_renamed | 0.1 | none | none | 0 | 2 | 51.00 ± 1.41 |" in markdown


# ---------------------------------------------------------------------------- reading a sweep


def test_a_sweep_reads_back_in_grid_order_with_seed_and_clients(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    names = write_sweep(root)
    stored = store.read_sweep(root)
    assert stored.axes == ["data.alpha", "seed"]
    assert [run.name for run in stored.runs] == names == ["data.alpha=0.1__seed=0", *names[1:]]
    assert store.run_directories(root) == [root / name for name in names]
    rows = store.index_rows(stored)
    assert list(rows[0])[:5] == ["data.alpha", "seed", "run", "num_clients", "algorithm"]
    assert {(row["run"], row["seed"], row["num_clients"]) for row in rows} == {
        (name, index % 2, 10) for index, name in enumerate(names)
    }


def test_seed_and_client_count_come_from_the_run_config_when_there_is_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sweep"
    names = write_sweep(root)
    (root / names[0] / store.CONFIG_FILE).write_text("seed = 0\n[data]\nnum_clients = 7\n")
    rows = store.index_rows(store.read_sweep(root))
    clients = {row["run"]: row["num_clients"] for row in rows}
    assert clients == {names[0]: 7, **{name: 10 for name in names[1:]}}


def test_unfinished_runs_are_not_read(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    names = write_sweep(root)
    (root / names[1] / store.METRICS_FILE).unlink()
    (root / f".{names[2]}.partial-x").mkdir()
    assert not store.is_finished(root, names[1]) and store.is_finished(root, names[0])
    assert store.run_directories(root) == [root / name for name in (names[0], *names[2:])]
    runs = {row["run"] for row in report.load_results(root).rows}
    assert runs == {names[0], *names[2:]}


def test_failed_runs_are_their_first_lines(tmp_path: Path) -> None:
    assert store.failed_runs(tmp_path) == {}
    (tmp_path / store.FAILED_DIR).mkdir()
    (tmp_path / store.FAILED_DIR / "a.txt").write_text("ValueError: bad\n\nTraceback ...\n")
    (tmp_path / store.FAILED_DIR / "b.txt").write_bytes(b"\xffbroken\n")
    assert store.failed_runs(tmp_path) == {"a": "ValueError: bad", "b": "\ufffdbroken"}


def test_a_metrics_file_reads_back_with_numbers_converted(tmp_path: Path) -> None:
    path = tmp_path / store.METRICS_FILE
    results.write_metrics(path, metrics_rows("pdmm", "none", float("nan")))
    rows = store.read_metrics(path)
    assert results.read_metrics is store.read_metrics
    assert (rows[0]["round"], rows[0]["test_accuracy"], rows[1]["round"]) == (0, 0.1, 5)
    assert math.isnan(rows[1]["test_accuracy"])
    assert rows[0]["honest_accuracy_mean"] == "" and rows[0]["algorithm"] == "pdmm"
    results.write_metrics(path, [])
    assert store.read_metrics(path) == []


def test_a_run_directory_reads_back_with_its_config(tmp_path: Path) -> None:
    results.write_metrics(tmp_path / store.METRICS_FILE, metrics_rows("pdmm", "none", 0.9))
    (tmp_path / store.CONFIG_FILE).write_text("seed = 3\n[data]\nnum_clients = 5\n")
    loaded = store.load_results(tmp_path)
    assert loaded.axes == [] and loaded.source == tmp_path
    assert {(r["seed"], r["run"], r["num_clients"]) for r in loaded.rows} == {(3, tmp_path.name, 5)}


# ---------------------------------------------------------------------------- corrupt files


def rewrite(path: Path, change: Callable[[list[list[str]]], list[list[str]]]) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    path.write_text("".join(",".join(row) + "\n" for row in change(rows)))


def drop_column(column: str) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        def change(rows: list[list[str]]) -> list[list[str]]:
            index = rows[0].index(column)
            return [row[:index] + row[index + 1 :] for row in rows]

        rewrite(path, change)

    return corrupt


def set_value(column: str, value: str) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        def change(rows: list[list[str]]) -> list[list[str]]:
            rows[1][rows[0].index(column)] = value
            return rows

        rewrite(path, change)

    return corrupt


def cut_last_row(path: Path) -> None:
    """Keep the first five fields of the last row, without its line end (an interrupted write)."""
    text = path.read_text().rstrip("\n")
    cut = text.rfind("\n") + 1
    for _ in range(5):
        cut = text.index(",", cut) + 1
    path.write_text(text[: cut - 1])


def add_fields(path: Path) -> None:
    rewrite(path, lambda rows: [*rows[:-1], [*rows[-1], "1", "2"]])


def as_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing algorithm column": (drop_column("algorithm"), r"no column algorithm"),
    "missing round column": (drop_column("round"), r"no column round"),
    "missing accuracy column": (drop_column("test_accuracy"), r"no column test_accuracy"),
    "word as round": (set_value("round", "five"), r"line 2, column round is 'five', expected an"),
    "float as round": (set_value("round", "2.5"), r"column round is '2\.5', expected an integer"),
    "empty Byzantine count": (set_value("num_byzantine", ""), r"column num_byzantine is ''"),
    "word as accuracy": (set_value("test_accuracy", "high"), r"test_accuracy is 'high', expected"),
    "empty loss": (set_value("test_loss", ""), r"column test_loss is '', expected a number"),
    "truncated last row": (cut_last_row, r"line \d+ has \d+ fields, the header has \d+"),
    "row with extra fields": (add_fields, r"line \d+ has \d+ fields, the header has \d+"),
    "binary file": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 50), r"not UTF-8"),
    "latin-1 text": (lambda p: p.write_bytes("algorithm,é\n".encode("latin-1")), r"not UTF-8"),
    "NUL bytes": (lambda p: p.write_bytes(b"\x00" * 200), r"no columns (run, )?algorithm, attack"),
    "empty file": (lambda p: p.write_text(""), r"the file is empty"),
    "blank lines only": (lambda p: p.write_text("\n\n\n"), r"the file is empty"),
    "directory": (as_directory, r"is a directory, not a file"),
}


def run_source(tmp_path: Path) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    results.write_metrics(tmp_path / store.METRICS_FILE, metrics_rows("pdmm", "sign_flip", 0.9))
    return tmp_path, tmp_path / store.METRICS_FILE


def sweep_source(tmp_path: Path) -> tuple[Path, Path]:
    names = write_sweep(tmp_path / "sweep")
    return tmp_path / "sweep", tmp_path / "sweep" / names[2] / store.METRICS_FILE


def index_source(tmp_path: Path) -> tuple[Path, Path]:
    names = write_sweep(tmp_path / "sweep")
    rows = store.index_rows(store.read_sweep(tmp_path / "sweep"))
    (tmp_path / "index").mkdir()
    with (tmp_path / "index" / store.INDEX_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert {row["run"] for row in report.load_results(tmp_path / "index").rows} == set(names)
    return tmp_path / "index", tmp_path / "index" / store.INDEX_FILE


SOURCES = {"run": run_source, "sweep": sweep_source, "index": index_source}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_a_corrupt_results_file_is_one_line_naming_it(
    tmp_path: Path, source: str, corruption: str
) -> None:
    directory, path = SOURCES[source](tmp_path)
    corrupt, message = CORRUPTIONS[corruption]
    corrupt(path)
    with pytest.raises(FedpdmmError, match=message) as caught:
        report.write_report(directory, tmp_path / "report")
    assert str(caught.value).startswith(f"cannot read {path}: ")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "report").exists()


def test_a_missing_run_column_in_an_index_is_an_error(tmp_path: Path) -> None:
    directory, path = index_source(tmp_path)
    drop_column("run")(path)
    with pytest.raises(FedpdmmError, match=r"index\.csv: the header has no column run "):
        report.load_results(directory)


SWEEP_TOML_CORRUPTIONS = {
    "not TOML": (b"grid = [[", r"not valid TOML"),
    "binary": (b"\xff\xfe\x00\x89PNG" * 20, r"not UTF-8"),
    "no config": (b'grid = [["seed", [0]]]\n', r"no \[config\] table"),
    "grid not pairs": (b'grid = ["seed"]\n[config]\nseed = 0\n', r"grid must be a list of"),
    "grid values not a list": (b'grid = [["seed", 0]]\n[config]\n', r"grid must be a list of"),
    "word as client count": (
        b'grid = [["data.alpha", [0.1, 1.0]], ["seed", [0, 1]]]\n\n[config.data]\n'
        b'num_clients = "ten"\n',
        r"data\.num_clients is 'ten', expected an integer",
    ),
}


@pytest.mark.parametrize("corruption", list(SWEEP_TOML_CORRUPTIONS))
def test_a_corrupt_sweep_toml_is_one_line_naming_it(tmp_path: Path, corruption: str) -> None:
    write_sweep(tmp_path / "sweep")
    data, message = SWEEP_TOML_CORRUPTIONS[corruption]
    (tmp_path / "sweep" / store.SWEEP_FILE).write_bytes(data)
    with pytest.raises(FedpdmmError, match=message) as caught:
        report.write_report(tmp_path / "sweep")
    assert str(caught.value).startswith(f"cannot read {tmp_path / 'sweep' / store.SWEEP_FILE}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"seed = [", r"not valid TOML"),
        (b"\xff\xfe\x00", r"not UTF-8"),
        (b'[data]\nnum_clients = "ten"\n', r"data\.num_clients is 'ten', expected an integer"),
    ],
)
@pytest.mark.parametrize("source", ["run", "sweep"])
def test_a_corrupt_run_config_is_one_line_naming_it(
    tmp_path: Path, source: str, text: bytes, message: str
) -> None:
    directory, metrics = SOURCES[source](tmp_path)
    config = metrics.parent / store.CONFIG_FILE
    config.write_bytes(text)
    with pytest.raises(FedpdmmError, match=message) as caught:
        report.load_results(directory)
    assert str(caught.value).startswith(f"cannot read {config}: ")


def test_the_report_command_prints_one_line_for_a_corrupt_file(tmp_path: Path) -> None:
    directory, path = run_source(tmp_path)
    set_value("round", "five")(path)
    done = subprocess.run(
        [sys.executable, "-m", "fedpdmm", "report", str(directory)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot read {path}: line 2, column round is 'five', expected an integer"
    ]
