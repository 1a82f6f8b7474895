"""hwd_tune.console.run_log: what other code writes to fds 1 and 2 goes to the run log, the command's
console still reaches the terminal, and --verbose leaves everything on the terminal."""

import os
import sys

from rich.console import Console

from hwd_tune.console import RunLog


def test_output_of_other_code_goes_to_the_log_and_the_console_to_the_terminal(tmp_path, capfd):
    console = Console(width=80)
    run_log = RunLog(tmp_path / "outputs", "sweep")
    assert not run_log.path.parent.exists()  # nothing is written before the command starts
    with run_log.capture(console) as path:
        os.write(1, b"(RayTrainWorker pid=1) Checkpoint successfully created\n")  # as Ray's C++ core or a forwarder
        os.write(2, b"core_worker.cc:2465: Actor with class name\n")
        print("Tune's status table")
        print("ExperimentalWarning: an Optuna warning", file=sys.stderr)
        console.print("start   trial-a  tau=4")
    terminal = capfd.readouterr()
    assert path == run_log.path and path.parent == (tmp_path / "outputs" / "logs").resolve()
    log = path.read_text()
    for written in ("(RayTrainWorker pid=1)", "core_worker.cc", "Tune's status table", "ExperimentalWarning"):
        assert written in log and written not in terminal.out + terminal.err
    assert terminal.out == "start   trial-a  tau=4\n"
    print("after the command")  # the descriptors are back
    assert capfd.readouterr().out == "after the command\n"


def test_verbose_leaves_everything_on_the_terminal_and_append_adds_the_traceback(tmp_path, capfd):
    run_log = RunLog(tmp_path, "quickstart")
    with run_log.capture(Console(), verbose=True):
        os.write(1, b"(raylet) WARNING: 10 PYTHON worker processes\n")
    assert "(raylet)" in capfd.readouterr().out
    run_log.append("Traceback (most recent call last):\n")
    assert run_log.path.read_text() == "Traceback (most recent call last):\n"
