"""Tables fitted to the terminal width."""

from __future__ import annotations

from bench.terminal import MIN_WRAPPED, fit_table, terminal_width

ROWS = [["adamw", "bench-lm 0.1.0", "betas=[0.9, 0.999], eps=1e-08, weight_decay=0.01, decay_exclude=[]",
         "AdamW; decoupled weight decay, as in Loshchilov and Hutter (2019), with the usual defaults"],
        ["sgd", "bench-lm 0.1.0", None, "plain stochastic gradient descent"]]
HEADERS = ["name", "provided by", "defaults", "description"]


def test_wrapped_columns_fit_the_width_and_keep_every_word():
    text = fit_table(ROWS, HEADERS, wrap=(2, 3), width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) > 4  # the long cells were wrapped onto more lines
    words = " ".join(text.split())
    for cell in ROWS[0][2:]:
        assert all(word in words for word in cell.split())
    # Columns that are not wrapped keep their whole values on one line.
    assert "bench-lm 0.1.0" in lines[2]


def test_a_table_that_fits_is_left_alone_and_none_prints_empty():
    text = fit_table(ROWS, HEADERS, wrap=(2, 3), width=400)
    assert len(text.splitlines()) == 4 and "None" not in text


def test_a_very_narrow_terminal_keeps_a_minimum_column_width():
    text = fit_table(ROWS, HEADERS, wrap=(2, 3), width=30)
    widths = [len(cell) for cell in text.splitlines()[1].split()]
    assert widths[2] >= MIN_WRAPPED and widths[3] >= MIN_WRAPPED


def test_terminal_width_reads_columns_and_a_pipe_is_not_wrapped(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "123")
    assert terminal_width() == 123
    monkeypatch.delenv("COLUMNS")
    assert terminal_width() is None  # pytest captures stdout: not a terminal
    assert len(fit_table(ROWS, HEADERS, wrap=(2, 3)).splitlines()) == 4
