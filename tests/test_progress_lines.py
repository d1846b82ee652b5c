"""Progress on a console that is not a terminal (a log file, a pipe, cron): plain lines, as many
as are useful, the first and last counts always, and the commands use them there."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from fedpdmm.progress_lines import LineProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines_of(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def progress_on_a_buffer(interval_s: float = 30.0, unit: str = "rounds"):
    buffer, clock = io.StringIO(), Clock()
    console = Console(file=buffer, width=60, force_terminal=False)
    return LineProgress(console, unit=unit, interval_s=interval_s, clock=clock), buffer, clock


def test_counts_are_printed_at_most_once_per_interval_and_first_and_last_always() -> None:
    progress, buffer, clock = progress_on_a_buffer()
    with progress:
        task = progress.add_task("pdmm / none", total=100)
        for done in range(1, 101):
            clock.now = done * 1.0  # one round a second
            progress.update(task, completed=done)
    lines = lines_of(buffer)
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts[0] == 1 and counts[-1] == 100
    assert counts == [1, 31, 61, 91, 100]
    assert lines[0] == "pdmm / none: 1/100 rounds, ETA 00:01:39"
    assert lines[-1] == "pdmm / none: 100/100 rounds"


def test_a_new_description_is_printed_at_once_and_a_long_line_is_not_wrapped() -> None:
    progress, buffer, clock = progress_on_a_buffer()
    long_name = "fedavg+bucketing+centered_clipping / mimic (with a long description)"
    with progress:
        task = progress.add_task("setting up", total=4)
        clock.now = 1.0
        progress.update(task, completed=1, description="dsgd / none")
        clock.now = 2.0
        progress.update(task, completed=2, description=long_name)
        progress.update(task, completed=2, description=long_name)  # no change: no line
    lines = lines_of(buffer)
    assert [line.split(": ")[0] for line in lines] == ["dsgd / none", long_name]


def test_a_count_held_back_by_the_interval_is_printed_when_the_command_ends() -> None:
    progress, buffer, clock = progress_on_a_buffer()
    with progress:
        task = progress.add_task("sweep", total=10, running=2, failed=0, eta="ETA 00:05:00")
        clock.now = 1.0
        progress.update(task, completed=1, running=2)
        clock.now = 2.0
        progress.update(task, completed=2, running=1)
    lines = lines_of(buffer)
    assert lines == [
        "sweep: 1/10 rounds, running 2, failed 0, ETA 00:05:00",
        "sweep: 2/10 rounds, running 1, failed 0, ETA 00:05:00",
    ]


def test_fields_name_their_own_unit_and_an_empty_eta_prints_none() -> None:
    progress, buffer, clock = progress_on_a_buffer(unit="")
    with progress:
        task = progress.add_task("runs", total=2, unit="combinations", eta="")
        clock.now = 5.0
        progress.update(task, completed=2)
    assert lines_of(buffer) == ["runs: 2/2 combinations"]


def test_an_eta_over_a_day_counts_hours() -> None:
    progress, buffer, clock = progress_on_a_buffer()
    with progress:
        task = progress.add_task("long", total=1000)
        clock.now = 3600.0
        progress.update(task, completed=10)
    assert lines_of(buffer)[0] == "long: 10/1000 rounds, ETA 99:00:00"


def test_fedpdmm_run_writes_progress_lines_to_a_log(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("fedpdmm")
    log = tmp_path / "run.log"
    config = tmp_path / "small.toml"
    config.write_text('rounds = 3\nalgorithms = ["fedavg"]\nattacks = ["none"]\n')
    out = tmp_path / "run"
    with log.open("w") as handle:
        done = subprocess.run(
            [str(script), "run", str(config), "--set", "local.steps=1", "--out", str(out)],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=120, env=os.environ,
        )  # fmt: skip
    text = log.read_text()
    assert done.returncode == 0, text
    assert "fedavg / none: 1/3 rounds" in text
    assert "3/3 rounds" in text
    assert "\x1b[" not in text  # no terminal control codes in a log


def test_the_sweep_display_eta_counts_hours_past_a_day_too() -> None:
    from fedpdmm.cli_experiments import _eta

    assert _eta(None) == "ETA -"
    assert _eta(30 * 3600 + 61) == "ETA 30:01:01"
