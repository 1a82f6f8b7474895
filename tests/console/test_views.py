"""hwd_tune.console.lines and views: the plain progress lines and the live trial table."""

import io
import re

from rich.console import Console

from hwd_tune.console import Board, PlainView, TrialLine, board_table, lines, watching
from tests.console.test_board import Clock

PLAIN_LINE = re.compile(r"^\[\d\d:\d\d\] (stage|start|best|done|stopped|failed)\s+\S")


def test_parameters_are_shown_in_the_papers_order_whatever_the_sweep_files_order():
    assert lines.in_paper_order(["beta", "lambda", "mu", "tau"]) == ["tau", "mu", "beta", "lambda"]


def test_plain_lines_have_one_fixed_shape_per_event():
    line = TrialLine("t1", "abc_00001", {"tau": 4.0, "mu": 0.0, "beta": 0.1}, max_iters=150)
    assert lines.started_line(75, line) == "[01:15] start   abc_00001  tau=4 mu=0 beta=0.1"
    line.iteration, line.val_miou, line.best = 50, 41.234, 41.234
    assert lines.improved_line(3725, line) == "[1:02:05] best    abc_00001  iter 50/150  val mIoU 41.23"
    line.status = "stopped early"
    assert lines.finished_line(80, line) == "[01:20] stopped abc_00001  iter 50/150, best 41.23"
    line.status, line.reason = "failed", "NonFiniteLossError: non-finite loss"
    failed = "[01:20] failed  abc_00001  iter 50/150, best 41.23: NonFiniteLossError: non-finite loss"
    assert lines.finished_line(80, line) == failed
    assert lines.stage_line(5, "search quickstart") == "[00:05] stage   search quickstart"


def test_a_console_that_is_not_a_terminal_gets_plain_lines_and_no_redraw():
    clock, stream = Clock(), io.StringIO()
    console = Console(file=stream, width=80)
    assert not console.is_terminal
    board = Board(clock)
    with watching(board, console):
        board.stage("search", total=1)
        board.started("a", "trial-a", {"tau": 2.0}, max_iters=100)
        clock.now += 61
        board.result("a", 50, 30.0)
        board.result("a", 100, 29.0)  # not an improvement: no line
        board.finished("a", "completed", iteration=100)
    printed = stream.getvalue().splitlines()
    assert printed == [
        "[00:00] stage   search",
        "[00:00] start   trial-a  tau=2",
        "[01:01] best    trial-a  iter 50/100  val mIoU 30.00",
        "[01:01] done    trial-a  iter 100/100, best 30.00",
    ]
    assert all(PLAIN_LINE.match(line) for line in printed)
    assert "\x1b" not in stream.getvalue()  # no cursor movement or colour


def test_a_terminal_gets_the_live_view_not_plain_lines():
    stream = io.StringIO()
    console = Console(file=stream, width=100, force_terminal=True, color_system=None)
    board = Board(Clock())
    with watching(board, console):
        assert not any(isinstance(view, PlainView) for view in board.views)
        board.stage("search", total=1)
        board.started("a", "trial-a", {"tau": 2.0}, max_iters=100)
        board.finished("a", "completed", iteration=100, best=30.0)
    assert "✓ search: 1 run(s), best 30.00 (trial-a)" in stream.getvalue()  # the stage leaves one line


def test_the_table_has_a_row_per_trial_with_its_params_progress_scores_status_and_node():
    board = Board(Clock())
    board.stage("search", total=2)
    board.started("a", "trial-a", {"tau": 4.0, "mu": 0.0, "beta": 0.1}, max_iters=150)
    board.started("b", "trial-b", {"tau": 1.5, "mu": 1.25, "beta": 0.02}, max_iters=150)
    board.result("a", 50, 41.5, node="10.0.0.1")
    board.result("b", 25, 38.0, node="10.0.0.2")
    board.finished("b", "stopped early", iteration=25)
    console = Console(record=True, width=120)
    console.print(board_table(board))
    text = console.export_text()
    header, row_a, row_b = text.splitlines()[:3]
    assert header.split() == ["trial", "τ", "μ", "β", "iter", "/", "max", "val", "mIoU", "best", "status", "node"]
    assert row_a.split() == ["trial-a", "4", "0", "0.1", "50/150", "41.50", "41.50", "running", "10.0.0.1"]
    stopped = ["trial-b", "1.5", "1.25", "0.02", "25/150", "38.00", "38.00", "stopped", "early", "10.0.0.2"]
    assert row_b.split() == stopped
