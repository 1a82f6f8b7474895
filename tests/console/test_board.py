"""hwd_tune.console.board: the state behind a command's screen, fed event by event."""

import pytest

from hwd_tune.console import Board, active_board, showing


class Clock:
    """A clock the test moves by hand, so elapsed times and estimates are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A view that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_stage_end(self, board):
        self.events.append(("stage end", board.stage_title))

    def on_stage(self, board):
        self.events.append(("stage", board.stage_title))

    def on_started(self, board, line):
        self.events.append(("start", line.label))

    def on_improved(self, board, line):
        self.events.append(("best", f"{line.label} {line.val_miou}"))

    def on_finished(self, board, line):
        self.events.append(("end", f"{line.label} {line.status}"))

    def on_message(self, board, text):
        self.events.append(("message", text))


def test_an_improvement_is_a_validation_above_the_stage_best_and_ends_are_told_once():
    board, recorder = Board(Clock()), Recorder()
    board.views.append(recorder)
    board.stage("search", total=2)
    board.started("a", "trial-a", {"tau": 4.0}, max_iters=100)
    board.started("b", "trial-b", {"tau": 2.0}, max_iters=100)
    board.result("a", 25, 40.0)
    board.result("b", 25, 35.0)  # below trial-a's 40: not an improvement of the stage
    board.result("b", 50, 45.0)
    board.result("a", 50)  # a report without validation
    board.finished("a", "stopped early", iteration=50)
    board.finished("a", "completed", iteration=100)  # a second end of the same trial is ignored
    board.finished("b", "completed", iteration=100, best=46.0)
    board.stage("final stage", total=1)
    board.started("c", "top-1 seed 0", announce=False)  # a run that reports once: its end says all
    board.finished("c", "completed", iteration=100, best=47.0)
    assert recorder.events == [
        ("stage", "search"),
        ("start", "trial-a"),
        ("start", "trial-b"),
        ("best", "trial-a 40.0"),
        ("best", "trial-b 45.0"),
        ("end", "trial-a stopped early"),
        ("end", "trial-b completed"),
        ("stage end", "search"),
        ("stage", "final stage"),
        ("end", "top-1 seed 0 completed"),
    ]
    assert list(board.lines) == ["c"]  # the new stage started empty


def test_the_estimate_is_the_stage_time_scaled_by_the_work_left():
    clock = Clock()
    board = Board(clock)
    board.stage("search", total=4)
    assert board.remaining_s() is None  # nothing has progressed: no estimate
    board.started("a", "a", max_iters=100)
    board.started("b", "b", max_iters=100)
    clock.now += 30.0
    board.result("a", 50, 30.0)
    board.finished("b", "stopped early", iteration=25)  # a stopped trial counts as done
    # done: 0.5 + 1 of 4 trials in 30 s -> 2.5 trials left take 30 * 2.5 / 1.5 = 50 s
    assert board.remaining_s() == pytest.approx(50.0)
    assert board.stage_elapsed_s() == pytest.approx(30.0)
    assert board.best_value() == 30.0


def test_the_active_board_is_the_innermost_one_shown_and_otherwise_a_silent_one():
    outer, inner = Board(), Board()
    with showing(outer):
        with showing(inner):
            assert active_board() is inner
        assert active_board() is outer
    unwatched = active_board()
    assert unwatched is not outer and unwatched.views == []
