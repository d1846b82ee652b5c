"""Specification of the `fedpdmm` command line: end to end on digits (both entry points), the
run directory it promises, and bad input turned into one `error:` line, exit code 2, no traceback
and no output directory."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedpdmm import attacks, cli, config

PROMISED_COLUMNS = (
    "algorithm",
    "attack",
    "round",
    "test_accuracy",
    "test_loss",
    "honest_accuracy_mean",
    "honest_accuracy_min",
    "consensus_distance",
    "samples",
    "wall_time",
)
RUN_FILES = ("config.toml", "metrics.csv", "clients.csv", "summary.md", "accuracy.png")
CONSOLE_SCRIPT = Path(sys.executable).with_name("fedpdmm")
SMALL = ["--set", "local.steps=2", "--set", "local.batch_size=16"]


def fedpdmm(*args: str, cwd: Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `python -m fedpdmm ARGS` (or the console script) in a child process."""
    command = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "fedpdmm"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=os.environ
    )


def summary_rows(text: str) -> list[list[str]]:
    """The data rows of the markdown table in summary.md."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def leftovers(parent: Path, name: str) -> list[Path]:
    """Anything named like the run directory or its staging copies under `parent`."""
    return sorted(parent.glob(f"{name}*")) + sorted(parent.glob(f".{name}*"))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_run_end_to_end_on_digits_with_a_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(
        'rounds = 10\neval_every = 1\nalgorithms = ["pdmm", "fedavg"]\n'
        'attacks = ["none", "sign_flip"]\n\n[attack]\nnum_byzantine = 3\n'
    )
    out = tmp_path / "run"
    done = fedpdmm(
        "run", str(path), "--set", "rounds=3", *SMALL, "--out", str(out), "--quiet",
        cwd=tmp_path, script=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    assert leftovers(tmp_path, "run") == [out]

    written = config.load(out / "config.toml")
    assert written == config.load(path, ["rounds=3", "local.steps=2", "local.batch_size=16"])

    with (out / "metrics.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert set(PROMISED_COLUMNS) <= set(reader.fieldnames or [])
        rows = list(reader)
    combos = {("pdmm", "none"), ("pdmm", "sign_flip"), ("fedavg", "none"), ("fedavg", "sign_flip")}
    assert {(row["algorithm"], row["attack"]) for row in rows} == combos
    for algorithm, attack in combos:
        mine = [row for row in rows if (row["algorithm"], row["attack"]) == (algorithm, attack)]
        assert [int(row["round"]) for row in mine] == [0, 1, 2, 3]
        assert [int(row["samples"]) for row in mine] == [10 * 2 * 16 * t for t in range(4)]
        assert all(0.0 <= float(row["test_accuracy"]) <= 1.0 for row in mine)

    table = summary_rows((out / "summary.md").read_text())
    assert sorted((row[0], row[1]) for row in table) == sorted(combos)

    with (out / "clients.csv").open(newline="") as handle:
        clients = list(csv.DictReader(handle))
    assert len(clients) == 10
    assert sum(int(row["byzantine"]) for row in clients) == 3

    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embedded_default_finishes_and_prints_the_summary_table(tmp_path: Path) -> None:
    out = tmp_path / "default"
    done = fedpdmm("run", "--out", str(out), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy of the global model" in done.stdout
    table_lines = [line for line in done.stdout.splitlines() if "pdmm" in line or "fedavg" in line]
    assert len(table_lines) == 4
    assert sum("sign_flip" in line for line in table_lines) == 2
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    assert config.load(out / "config.toml") == config.load()


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, nothing left behind
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator:
    """Call `fedpdmm.cli.main` with ARGS; return (exit code, stdout, stderr)."""
    threads = torch.get_num_threads()

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["fedpdmm", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield call
    torch.set_num_threads(threads)


def assert_one_error_line(
    code: int, stderr: str, *expected: str, notices: tuple[str, ...] = ()
) -> None:
    """Exit code 2 and one `error:` line holding `expected`; other lines only start `notices`."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), stderr
    assert all(line.startswith(notices) for line in lines[:-1]) if notices else len(lines) == 1
    for text in expected:
        assert text in lines[-1]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "roundz=3"], ["'roundz'", "rounds"]),
        (["--set", "local.lr=fast"], ["'local.lr'"]),
        (["--set", "pdmm.theta=2"], ["'pdmm.theta'"]),
        (["--set", "attack.num_byzantine=11"], ["attack.num_byzantine=11"]),
        (["--set", "rounds"], ["key=value"]),
        (["--set", 'algorithms=["fedsgd"]'], ["'fedsgd'"]),
        (["--set", 'attacks=["flip"]'], ["'flip'"]),
        (["--set", 'attacks=["ipm"]'], ["'ipm'", "epsilon"]),
        (["missing.toml"], ["missing.toml", "does not exist"]),
    ],
)
def test_bad_config_exits_2_with_one_line(in_process, tmp_path: Path, args, expected) -> None:
    out = tmp_path / "out"
    code, _, stderr = in_process("run", *args, "--out", str(out), "--quiet")
    assert_one_error_line(code, stderr, *expected)
    assert leftovers(tmp_path, "out") == []


def test_invalid_toml_exits_2_with_one_line(in_process, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[local\nlr = 0.1\n")
    code, _, stderr = in_process("run", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert_one_error_line(code, stderr, "broken.toml", "not valid TOML")
    assert leftovers(tmp_path, "out") == []


def test_missing_dataset_exits_2_naming_it(in_process, isolated_data_env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = in_process(
        "run", "--set", "data.name=mnist", "--data-dir", "/nonexistent", "--out", str(out),
        "--quiet",
    )  # fmt: skip
    assert_one_error_line(
        code, stderr, "mnist", "/nonexistent", "127.0.0.1:9", notices=("fedpdmm: downloading",)
    )
    assert leftovers(tmp_path, "out") == []
    assert not isolated_data_env.cache.exists() or not any(isolated_data_env.cache.rglob("*.gz"))


def test_dirichlet_split_leaving_a_client_empty_names_data_alpha(
    in_process, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, _, stderr = in_process(
        "run", "--set", "data.partition=dirichlet", "--set", "data.alpha=0.001",
        "--set", "data.num_clients=200", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert_one_error_line(code, stderr, "data.alpha")
    assert leftovers(tmp_path, "out") == []


def test_error_during_training_leaves_no_output_directory(in_process, tmp_path: Path) -> None:
    """ALIE is undefined for a Byzantine majority: the error comes in round 1, after set-up."""
    out = tmp_path / "out"
    code, _, stderr = in_process(
        "run", "--set", 'attacks=["alie"]', "--set", "attack.num_byzantine=6",
        "--set", "rounds=2", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert_one_error_line(code, stderr, "'alie'", "f=6")
    assert leftovers(tmp_path, "out") == []


def test_existing_non_empty_out_is_refused_and_kept(in_process, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    code, _, stderr = in_process("run", "--set", "rounds=1", "--out", str(out), "--quiet")
    assert_one_error_line(code, stderr, str(out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier results"


def test_list_names_what_the_config_accepts(in_process) -> None:
    code, stdout, _ = in_process("list")
    assert code == 0
    for line in ("datasets:", "models:", "algorithms:", "attacks:", "partitions:"):
        assert line in stdout
    assert "digits" in stdout and "mlp" in stdout and "pdmm" in stdout
    code, stdout, _ = in_process("list", "attacks")
    assert code == 0
    assert stdout.strip() == f"attacks: {', '.join(attacks.names())}"


def test_list_of_an_unknown_catalogue_exits_2(in_process) -> None:
    code, _, stderr = in_process("list", "widgets")
    assert_one_error_line(code, stderr, "'widgets'", "attacks")


def test_every_client_byzantine_exits_2(in_process, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = in_process(
        "run", "--set", "attack.num_byzantine=10", "--set", "rounds=1", "--out", str(out),
        "--quiet",
    )  # fmt: skip
    assert_one_error_line(code, stderr, "attack.num_byzantine")


def test_bad_input_in_a_child_process_exits_2_without_traceback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = fedpdmm("run", "--set", "local.lr=fast", "--out", str(out), "--quiet", cwd=tmp_path)
    assert_one_error_line(done.returncode, done.stderr, "'local.lr'")
    assert done.stdout == ""
    assert leftovers(tmp_path, "out") == []


THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # PyTorch's transparent huge pages for large CPU tensors


def test_huge_pages_change_no_number(tmp_path: Path, real_data_dir: Path) -> None:
    # 10 MNIST MLP clients: [10, d] tensors of 6.4 MB, above the 2 MB where huge pages apply
    metrics = []
    for value in ("0", "1"):
        env = {**os.environ, THP_VARIABLE: value, "FEDPDMM_DATA": str(real_data_dir)}
        out = tmp_path / f"thp-{value}"
        done = subprocess.run(
            [sys.executable, "-m", "fedpdmm", "run", *SMALL, "--set", "rounds=3",
             "--set", 'data.name="mnist"', "--set", "eval.node_samples=200",
             "--out", str(out), "--quiet"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with (out / "metrics.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        metrics.append([{k: v for k, v in row.items() if not k.endswith("_time")} for row in rows])
    assert metrics[0] == metrics[1]
