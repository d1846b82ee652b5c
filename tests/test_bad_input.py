"""Specification of bad input, class by class: every config file, `--set` override, `--out` path
and setting the data or the machine cannot satisfy is one `error:` line on stderr naming what is
wrong, exit code 2, no traceback, and no output directory; stale staging folders of killed runs
are cleaned up without touching those of live writers."""

from __future__ import annotations

import codecs
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fedpdmm import cli, config, engine, resources, results
from fedpdmm import staging as staging_module
from fedpdmm.errors import ConfigError
from fedpdmm.models import FlatModel

TINY = [
    "--quiet",
    "--set",
    "rounds=1",
    "--set",
    "local.steps=1",
    "--set",
    'algorithms=["fedavg"]',
    "--set",
    'attacks=["none"]',
]

Call = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fedpdmm(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> Iterator[Call]:
    """Call `fedpdmm.cli.main` with ARGS in `tmp_path`; return (exit code, stdout, stderr)."""
    threads = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)

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


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any combination starts training."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engine, "run_combination", refuse)


def one_error_line(code: int, stderr: str, *expected: str) -> str:
    """Exit code 2 and exactly one stderr line, starting `error:` and holding `expected`."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def nothing_written(folder: Path, name: str = "out") -> None:
    assert not list(folder.glob(f"{name}*")) and not list(folder.glob(f".{name}*"))


def load_error(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# 1. Config files that are not UTF-8 TOML
# ---------------------------------------------------------------------------------------------

NOT_UTF8 = {
    "latin1": "rounds = 3\n# caf\xe9 au lait\n".encode("latin-1"),
    "utf16_bom": "rounds = 3\n".encode("utf-16"),
    "utf16_be_bom": codecs.BOM_UTF16_BE + "rounds = 3\n".encode("utf-16-be"),
    "utf16_no_bom": "rounds = 3\n".encode("utf-16-le"),
    "utf32_bom": "rounds = 3\n".encode("utf-32"),
    "binary": bytes(range(256)) * 4,
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "nul": b"rounds = 3\x00\n",
    "nul_in_string": b'[data]\nname = "dig\x00its"\n',
    "cp1252_quote": b"[data]\nname = \x93digits\x94\n",
}


@pytest.mark.parametrize("content", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_a_config_that_is_not_utf8_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    message = load_error(path=path)
    assert str(path) in message and "UTF-8" in message


@pytest.mark.parametrize("name", ["latin1", "utf16_bom", "binary", "nul"])
def test_the_cli_reports_a_non_utf8_config_in_one_line(
    fedpdmm: Call, tmp_path: Path, name: str
) -> None:
    (tmp_path / "run.toml").write_bytes(NOT_UTF8[name])
    code, _, err = fedpdmm("run", "run.toml", "--out", "out", "--quiet")
    one_error_line(code, err, "run.toml", "UTF-8")
    nothing_written(tmp_path)


def test_utf8_with_a_byte_order_mark_and_non_ascii_text_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(codecs.BOM_UTF8 + 'rounds = 3 # café\n[data]\ndir = "/données"\n'.encode())
    loaded = config.load(path)
    assert loaded.rounds == 3 and loaded.data.dir == "/données"


def test_an_unreadable_config_is_one_line(tmp_path: Path) -> None:
    long_name = tmp_path / ("x" * 300 + ".toml")
    assert "cannot read config file" in load_error(path=long_name)


# ---------------------------------------------------------------------------------------------
# 2. Numbers beyond what float32 tensors and 64-bit integers hold
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "local.lr=1e300",
        "local.lr=3.5e38",
        "pdmm.c=1e300",
        "attack.sigma=1e300",
        "data.alpha=1e39",
        "fedprox.mu=1e300",
        "scaffold.server_lr=1e300",
    ],
)
def test_floats_beyond_float32_name_the_key_and_the_bound(assignment: str) -> None:
    message = load_error(assignment)
    assert f"'{assignment.split('=')[0]}'" in message and "3.403e+38" in message


@pytest.mark.parametrize(
    "assignment",
    [
        "seed=99999999999999999999999",
        "seed=-9223372036854775809",
        "seed=9223372036854775808",
        "rounds=100000000000000000000",
        "eval_every=100000000000000000000",
        "data.num_clients=1000000000000000000000000000000",
        "data.min_size=100000000000000000000",
        "data.shards_per_client=100000000000000000000",
        "local.steps=100000000000000000000",
        "local.batch_size=100000000000000000000",
        "attack.num_byzantine=100000000000000000000",
        "algorithm.root_size=100000000000000000000",
    ],
)
def test_integers_beyond_64_bits_name_the_key_and_the_bound(assignment: str) -> None:
    message = load_error(assignment)
    assert f"'{assignment.split('=')[0]}'" in message and "64-bit" in message


@pytest.mark.parametrize("hidden", ["[100000000]", "[200, 1000001]", "[99999999999999999999999]"])
def test_hidden_layers_above_a_million_units_are_refused(hidden: str) -> None:
    message = load_error(f"model.hidden={hidden}")
    assert "'model.hidden'" in message and "1,000,000" in message


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("attack.params.ipm.epsilon=1e300", "attack.params.ipm.epsilon"),
        ("attack.params.inf.value=-1e39", "attack.params.inf.value"),
        ("attack.params.alie.z=99999999999999999999999", "attack.params.alie.z"),
        ("algorithm.params.centered_clipping.tau=1e300", "algorithm.params.centered_clipping.tau"),
        ("algorithm.params.krum.f=99999999999999999999999", "algorithm.params.krum.f"),
        ("data.options.separation=1e300", "data.options.separation"),
        ("data.options.num_train=100000000000000000000", "data.options.num_train"),
        ("data.options.separation=nan", "data.options.separation"),
        ("data.options.sizes=[1, 2e300]", "data.options.sizes[1]"),
        ("topology.p=1e300", "topology.p"),
        ("topology.p=inf", "topology.p"),
    ],
)
def test_numbers_inside_free_tables_are_checked_and_named(assignment: str, key: str) -> None:
    assert f"'{key}'" in load_error(assignment)


@pytest.mark.parametrize(
    "assignment",
    [
        "attack.params.inf.value=inf",
        "attack.params.inf.value=nan",
        "attack.params.inf.value=3e38",
        "local.lr=3.4e38",
        "seed=-9223372036854775808",
        "seed=9223372036854775807",
        "model.hidden=[1000000]",
    ],
)
def test_values_at_the_bounds_and_deliberate_non_finite_attacks_are_accepted(
    assignment: str,
) -> None:
    config.load(None, [assignment])


def test_the_cli_refuses_an_overflowing_learning_rate_before_training(
    fedpdmm: Call, tmp_path: Path, no_training: None
) -> None:
    code, _, err = fedpdmm("run", *TINY, "--set", "local.lr=1e300", "--out", "out")
    one_error_line(code, err, "local.lr", "float32")
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# 3. Parameter tables for rules or attacks that do not exist
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table, valid",
    [
        ("algorithm.params.nosuchrule", ("median", "krum", "nnm", "bucketing")),
        ("algorithm.params.Krum", ("krum",)),
        ("algorithm.params.sign_flip", ("trimmed_mean",)),
        ("attack.params.nosuchattack", ("alie", "ipm", "sign_flip")),
        ("attack.params.krum", ("gaussian",)),
    ],
)
def test_a_table_for_an_unknown_name_lists_the_valid_names(
    tmp_path: Path, table: str, valid: tuple[str, ...]
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f"[{table}]\nf = 1\n")
    message = load_error(path=path)
    assert f"'{table}'" in message
    assert all(name in message for name in valid)


def test_the_cli_refuses_an_unknown_table_and_writes_nothing(
    fedpdmm: Call, tmp_path: Path, no_training: None
) -> None:
    (tmp_path / "run.toml").write_text("[algorithm.params.nosuchrule]\nf = 1\n")
    code, _, err = fedpdmm("run", "run.toml", *TINY, "--out", "out")
    one_error_line(code, err, "algorithm.params.nosuchrule", "krum")
    nothing_written(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["attack.params.alie.z=1.5"],
        ["attack.params.bit_flip.unused=1"],
        ["algorithm.params.krum.f=1", "algorithm.params.nnm.f=1"],
    ],
)
def test_a_table_for_an_existing_but_unused_name_is_kept(overrides: list[str]) -> None:
    loaded = config.load(None, overrides)
    written = config.to_dict(loaded)
    for assignment in overrides:
        section, _, name, key = assignment.split("=")[0].split(".")
        assert key in written[section]["params"][name]


@pytest.mark.parametrize(
    "overrides, named",
    [
        (['algorithms=["fedavg+krum"]', "algorithm.params.krum.bogus=1"], "bogus"),
        (
            ['algorithms=["fedavg"]', "algorithm.aggregator=median", "algorithm.params.median.f=1"],
            "median",
        ),
        (['attacks=["ipm"]', "attack.params.ipm.epsilonn=0.5"], "epsilonn"),
    ],
)
def test_an_unknown_key_inside_a_used_table_stops_the_run_before_training(
    fedpdmm: Call, tmp_path: Path, no_training: None, overrides: list[str], named: str
) -> None:
    sets = [part for assignment in overrides for part in ("--set", assignment)]
    code, _, err = fedpdmm("run", *TINY, *sets, "--out", "out")
    one_error_line(code, err, named)
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# 4. Malformed --set assignments name the key
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("rounds=", ("rounds", "empty")),
        ("rounds=   ", ("rounds", "empty")),
        ("local.lr=", ("local.lr", "empty")),
        ("=5", ("'=5'", "no key")),
        ("  =5", ("=5", "no key")),
        ("rounds", ("rounds", "no '='")),
        ("data.name", ("data.name", "no '='")),
        ("rounds=[1,", ("rounds", "cannot read")),
        ('algorithms=["pdmm"', ("algorithms", "cannot read")),
        ("data.name={", ("data.name", "cannot read")),
        ("rounds=5\nseed=3", ("rounds", "one TOML value")),
        ("data..name=x", ("data..name", "empty part")),
        (".rounds=1", (".rounds", "empty part")),
        ("rounds.=1", ("rounds.", "empty part")),
        ("rounds.x=1", ("rounds.x", "'rounds' is a value")),
        ("local.lr.x=1", ("local.lr.x", "'local.lr' is a value")),
        ("data.name.x.y=1", ("data.name.x.y", "'data.name' is a value")),
        ("round\ns=1", ("control characters",)),
    ],
)
def test_malformed_set_assignments_name_the_key(assignment: str, expected: tuple[str, ...]) -> None:
    message = load_error(assignment)
    for text in expected:
        assert text in message, (text, message)


def test_a_value_then_a_section_set_on_it_names_the_key() -> None:
    assert "'rounds' is a value" in load_error("rounds=3", "rounds.x=1")


def test_free_tables_still_take_nested_keys() -> None:
    loaded = config.load(None, ["data.options.a.b=1", "topology.k=4", "attack.params.alie.z=2.0"])
    assert loaded.data.options == {"a": {"b": 1}}


@pytest.mark.parametrize("assignment", ["rounds=", "=5", "rounds", "rounds=[1,", "data..name=x"])
def test_the_cli_reports_a_malformed_set_in_one_line(
    fedpdmm: Call, tmp_path: Path, assignment: str
) -> None:
    code, _, err = fedpdmm("run", "--set", assignment, "--out", "out", "--quiet")
    one_error_line(code, err, "--set", assignment.partition("=")[0].strip() or "=5")
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# 5. Output paths that cannot become a run directory fail before training
# ---------------------------------------------------------------------------------------------


def _forbid_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the run started before its output path was checked")

    monkeypatch.setattr(engine, "run", refuse)


@pytest.mark.parametrize("out", ["", ".", "..", "sub/.."])
def test_an_output_path_without_a_name_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    _forbid_setup(monkeypatch)
    (tmp_path / "sub").mkdir()
    before = sorted(tmp_path.rglob("*"))
    code, _, err = fedpdmm("run", *TINY, "--out", out)
    one_error_line(code, err, "names no new directory", "--out")
    assert sorted(tmp_path.rglob("*")) == before


def test_an_output_path_that_is_a_file_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_setup(monkeypatch)
    (tmp_path / "out").write_text("a file")
    code, _, err = fedpdmm("run", *TINY, "--out", "out")
    one_error_line(code, err, "out", "not a directory")
    assert (tmp_path / "out").read_text() == "a file"


@pytest.mark.parametrize("out", ["afile/run", "afile/deeper/run"])
def test_an_output_path_inside_a_file_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    _forbid_setup(monkeypatch)
    (tmp_path / "afile").write_text("a file")
    code, _, err = fedpdmm("run", *TINY, "--out", out)
    one_error_line(code, err, out, "is a file")


def test_a_broken_symlink_as_output_path_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_setup(monkeypatch)
    (tmp_path / "out").symlink_to(tmp_path / "missing")
    code, _, err = fedpdmm("run", *TINY, "--out", "out")
    one_error_line(code, err, "not a directory")


def test_an_output_path_in_a_folder_without_write_permission_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_setup(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode)
    )
    code, _, err = fedpdmm("run", *TINY, "--out", "locked/new/run")
    one_error_line(code, err, "no permission to write in", "locked")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_a_read_only_folder_refuses_the_output_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_setup(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = fedpdmm("run", *TINY, "--out", "locked/run")
    finally:
        locked.chmod(0o700)
    one_error_line(code, err, "no permission")


def test_an_output_name_too_long_for_the_filesystem_fails_before_training(
    fedpdmm: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_setup(monkeypatch)
    for out in ["a" * 250, f"{'b' * 300}/run"]:
        code, _, err = fedpdmm("run", *TINY, "--out", out)
        one_error_line(code, err, "--out")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_out_fails_before_training_from_the_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("fedpdmm")
    done = subprocess.run(
        [str(script), "run", "--out", "", "--set", "rounds=100000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_error_line(done.returncode, done.stderr, "names no new directory")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 6. Staging folders of killed runs are removed; those of live writers are kept
# ---------------------------------------------------------------------------------------------


def dead_pid() -> int:
    """The PID of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def staging(parent: Path, name: str, owner: str | None, age_s: float = 0.0) -> Path:
    """A fake staging folder of run directory `name`, with an owner file holding `owner`."""
    path = parent / f".{name}.partial-{len(list(parent.iterdir())):08d}"
    path.mkdir()
    (path / "metrics.csv").write_text("truncated")
    if owner is not None:
        (path / staging_module.OWNER_FILE).write_text(owner)
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_a_run_removes_stale_staging_folders_and_keeps_live_ones(
    fedpdmm: Call, tmp_path: Path
) -> None:
    host = socket.gethostname()
    stale = [
        staging(tmp_path, "out", f"{dead_pid()} {host}\n"),
        staging(tmp_path, "out", None, age_s=2 * staging_module.STALE_AFTER_S),
        staging(tmp_path, "out", "garbage", age_s=2 * staging_module.STALE_AFTER_S),
    ]
    kept = [
        staging(tmp_path, "out", f"{os.getpid()} {host}\n"),
        staging(tmp_path, "out", None),
        staging(tmp_path, "out", f"{dead_pid()} another-host.example\n"),
        staging(tmp_path, "out", "garbage"),
        staging(tmp_path, "other", f"{dead_pid()} {host}\n"),
    ]
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / ".out.partial-link").symlink_to(target)
    code, _, err = fedpdmm("run", *TINY, "--out", "out")
    assert code == 0, err
    assert not any(path.exists() for path in stale)
    assert all((path / "metrics.csv").exists() for path in kept)
    assert target.is_dir() and (tmp_path / ".out.partial-link").is_symlink()
    assert (tmp_path / "out" / "metrics.csv").is_file()
    assert not (tmp_path / "out" / staging_module.OWNER_FILE).exists()


def test_the_staging_folder_names_its_writer_while_it_is_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with results.staged_directory(out) as folder:
        owner = (folder / staging_module.OWNER_FILE).read_text().split()
        assert owner == [str(os.getpid()), socket.gethostname()]
        assert results.remove_stale_partials(out) == []
        (folder / "metrics.csv").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv"]


def test_the_staging_folder_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from fedpdmm import results\n"
        "writing = results.staged_directory(Path(sys.argv[1]))\n"
        "writing.__enter__()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", code, str(out)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".run.partial-*")
    assert results.remove_stale_partials(out) == [left]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 7. Memory the machine does not have, and settings the data contradicts
# ---------------------------------------------------------------------------------------------

SHAPES = [
    ("logreg", (1, 28, 28), 10, ()),
    ("logreg", (3, 5, 7), 4, ()),
    ("mlp", (1, 8, 8), 10, (200,)),
    ("mlp", (1, 28, 28), 10, (200,)),
    ("mlp", (3, 5, 7), 4, (3, 9, 2)),
    ("mlp", (1, 64, 64), 40, ()),
    ("cnn", (1, 28, 28), 10, ()),
    ("cnn", (1, 64, 64), 40, ()),
    ("cnn", (3, 5, 9), 7, ()),
    ("cnn", (1, 4, 4), 2, ()),
]


@pytest.mark.parametrize("model, shape, classes, hidden", SHAPES)
def test_num_parameters_is_the_flat_model_dimension(model, shape, classes, hidden) -> None:
    expected = FlatModel.build(model, shape, classes, hidden).dim
    assert resources.num_parameters(model, shape, classes, hidden) == expected


def test_num_parameters_refuses_what_the_models_refuse() -> None:
    with pytest.raises(ConfigError, match="shrinks 3x8 images to nothing"):
        resources.num_parameters("cnn", (1, 3, 8), 10, ())
    with pytest.raises(ConfigError, match=r"model\.name"):
        resources.num_parameters("resnet", (1, 8, 8), 10, ())


def test_num_parameters_of_a_huge_model_allocates_nothing() -> None:
    assert resources.num_parameters("mlp", (1, 28, 28), 10, [10**6] * 4) > 3 * 10**12


@pytest.fixture
def machine_gb(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Pretend the machine has this many GB available."""

    def set_memory(gb: float) -> None:
        monkeypatch.setattr(resources, "available_memory", lambda: int(gb * 1e9))

    return set_memory


MNIST_MLP = resources.num_parameters("mlp", (1, 28, 28), 10, (200,))


def test_the_machine_reports_its_available_memory() -> None:
    available = resources.available_memory()
    assert available is None or available > 0


@pytest.mark.parametrize(
    "overrides, d, expected",
    [
        (["data.num_clients=50000", "data.name=mnist"], MNIST_MLP, ("50000 clients", "GB")),
        (["model.hidden=[1000000, 1000000]"], 10**12, ("parameters", "model")),
        (["local.batch_size=100000000000"], 15010, ("local.batch_size", "batches")),
        (["local.steps=1000000", "local.batch_size=100000"], 15010, ("local.steps",)),
    ],
)
def test_a_run_whose_state_cannot_fit_is_one_line_naming_what_to_lower(
    machine_gb, overrides: list[str], d: int, expected: tuple[str, ...]
) -> None:
    machine_gb(16)
    with pytest.raises(ConfigError) as caught:
        resources.check_memory(config.load(None, overrides), d, 60_000)
    message = str(caught.value)
    assert "\n" not in message and "the machine has 16.0 GB" in message
    for text in expected:
        assert text in message


def test_runs_that_fit_pass_the_memory_check(machine_gb) -> None:
    machine_gb(2)
    for path in config.presets().values():
        resources.check_memory(config.load(path), MNIST_MLP, 60_000, num_edges=20 * 19)
    resources.check_memory(config.load(None, ["data.num_clients=100"]), MNIST_MLP, 60_000)


def test_tiny_memory_refuses_even_the_default_run(machine_gb) -> None:
    machine_gb(1e-6)
    with pytest.raises(ConfigError, match=r"lower data\.num_clients"):
        resources.check_memory(config.load(), 15010, 1438)


def test_unknown_memory_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: None)
    resources.check_memory(config.load(None, ["data.num_clients=50000"]), 10**9, 60_000)


def test_graph_runs_count_the_per_edge_state(machine_gb) -> None:
    cfg = config.load(None, ["data.num_clients=1000", "topology.name=ring"])
    machine_gb(20)
    resources.check_memory(cfg, MNIST_MLP, 60_000, num_edges=2000)
    with pytest.raises(ConfigError, match="directed edges"):
        resources.check_memory(cfg, MNIST_MLP, 60_000, num_edges=1000 * 999)
    with pytest.raises(ConfigError, match="directed edges"):
        resources.check_memory(cfg, MNIST_MLP, 60_000)


@pytest.mark.parametrize(
    "overrides",
    [
        ['algorithms=["fedavg+fltrust"]'],
        ['algorithms=["pdmm+nnm+fltrust", "fedavg"]'],
        ['algorithms=["fedavg"]', "algorithm.aggregator=fltrust"],
    ],
)
def test_a_root_dataset_larger_than_the_training_set_is_refused(overrides: list[str]) -> None:
    cfg = config.load(None, [*overrides, "algorithm.root_size=500"])
    with pytest.raises(ConfigError) as caught:
        resources.check_root_size(cfg, 400)
    assert "algorithm.root_size=500" in str(caught.value) and "400" in str(caught.value)
    resources.check_root_size(cfg, 500)


def test_the_root_size_does_not_matter_without_fltrust() -> None:
    resources.check_root_size(config.load(None, ["algorithm.root_size=10000"]), 30)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["data.num_clients=2000"], "data.num_clients"),
        (["data.partition=shards", "data.shards_per_client=200"], "data.shards_per_client"),
        (["data.partition=dirichlet", "data.min_size=200"], "data.min_size"),
    ],
)
def test_settings_the_data_contradicts_are_one_line_before_training(
    fedpdmm: Call, tmp_path: Path, no_training: None, overrides: list[str], named: str
) -> None:
    sets = [part for assignment in overrides for part in ("--set", assignment)]
    code, _, err = fedpdmm("run", *TINY, *sets, "--out", "out")
    one_error_line(code, err, named)
    nothing_written(tmp_path)


# ---------------------------------------------------------------------------------------------
# 8. Typer's own usage errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--nosuchflag"], "No such option"),
        (["run", "--out"], "requires an argument"),
        (["run", "--threads", "0"], "--threads"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_typers_boxed_message_with_exit_code_2(
    fedpdmm: Call, tmp_path: Path, args: list[str], expected: str
) -> None:
    code, out, err = fedpdmm(*args)
    assert code == 2
    assert expected in err and "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["sweep", "digits"], ["reproduce", "paper", "--quick"]])
@pytest.mark.parametrize("out", ["", ".", ".."])
def test_sweep_and_reproduce_refuse_an_out_that_names_no_directory(
    command: list[str], out: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "fedpdmm", *command, "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out"), result.stderr
    assert list(tmp_path.iterdir()) == []
