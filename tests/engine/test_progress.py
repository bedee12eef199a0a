"""Progress: a bar on a terminal, plain periodic lines in a file or pipe."""

import io

from npmaskrcnn.engine.progress import Progress, _clock, is_terminal


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_n_steps_and_the_last():
    out = io.StringIO()
    bar = Progress(10, "evaluate", unit="img", every=4, stream=out)
    for _ in range(10):
        bar.update(1, {"loss": "1.000"})
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert lines[0].startswith("evaluate 4/10 (40%)  loss 1.000  ") and "ETA" in lines[0]
    assert "ETA" not in lines[-1] and "\r" not in out.getvalue()


def test_resumed_count_close_and_disabled():
    out = io.StringIO()
    bar = Progress(100, "train", initial=90, every=2, stream=out)
    for _ in range(3):
        bar.update(1)
    bar.close()  # stopped early: the last step is shown on close, once
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["92/100", "93/100"]
    assert Progress(100, "train", initial=90, stream=out).every == 1  # a tenth of the 10 left
    quiet = io.StringIO()
    off = Progress(5, "train", enabled=False, stream=quiet)
    off.update(5)
    off.close()
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_bar():
    term = Terminal()
    assert is_terminal(term) and not is_terminal(io.StringIO())
    bar = Progress(3, "train", stream=term)
    assert bar.bar is not None
    bar.update(3, {"loss": "0.5"})
    bar.close()
    assert "\r" in term.getvalue() and "loss=0.5" in term.getvalue()


def test_clock():
    assert (_clock(5), _clock(65), _clock(3725)) == ("0:05", "1:05", "1:02:05")
