"""What a command shows: a board of stages and trials (live in a terminal, plain lines elsewhere)
and the run log that takes Ray's and the libraries' own output."""

from hwd_tune.console.board import Board, TrialLine, active_board, showing
from hwd_tune.console.run_log import RunLog
from hwd_tune.console.screen import command_screen
from hwd_tune.console.views import LiveView, PlainView, board_table, watching

__all__ = [
    "Board",
    "LiveView",
    "PlainView",
    "RunLog",
    "TrialLine",
    "active_board",
    "board_table",
    "command_screen",
    "showing",
    "watching",
]
