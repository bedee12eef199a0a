"""Progress of a long loop: a tqdm bar on a terminal, plain periodic lines everywhere else.

A tqdm bar redraws itself with carriage returns; written to a file (``train > log 2>&1``),
a pipe or a CI log it becomes one line of hundreds of thousands of characters that ``tail``
cannot show. So the bar is used only when the stream is a terminal; otherwise a line like ::

    train 150/1500 (10%)  loss 1.234  classifier 0.301 ...  lr 0.0200  0.54 s/it  ETA 12:09

is printed every ``every`` steps (and for the last step), each one flushed at once.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal (a bar can redraw in place)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts steps ``initial..total`` and shows them as a bar or as periodic lines.

    Args:
        total: the step count at the end.
        desc: what is counted, first word of each line ("train", "evaluate").
        initial: steps already done (a resumed run).
        unit: "it", "img", ...
        enabled: False shows nothing at all.
        every: steps between two plain lines (default: a tenth of the remaining steps).
        stream: where to write (default ``sys.stderr``, as tqdm).
    """

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "it",
                 enabled: bool = True, every: int | None = None, stream=None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.n = self.start = initial
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, every if every is not None else (total - initial) // 10)
        self.bar = None
        if enabled and is_terminal(self.stream):
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            dynamic_ncols=True, file=self.stream)
        self.t0 = time.perf_counter()
        self.postfix: dict = {}
        self.last_line = None

    def update(self, n: int = 1, postfix: dict | None = None) -> None:
        """Advance by ``n`` steps; ``postfix`` (name -> shown value) joins the line or bar."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif self.enabled and ((self.n - self.start) % self.every == 0 or self.n == self.total):
            self._line()

    def line(self) -> str:
        """The plain progress line for the current step."""
        done = self.n - self.start
        elapsed = time.perf_counter() - self.t0
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"{self.desc} {self.n}/{self.total} ({pct:.0f}%)"]
        parts += [" ".join(f"{k} {v}" for k, v in self.postfix.items())] if self.postfix else []
        if done:
            per = elapsed / done
            rate = f"{per:.2f} s/{self.unit}" if per >= 0.1 else f"{1 / per:.1f} {self.unit}/s"
            parts.append(f"{rate}  elapsed {_clock(elapsed)}")
            if self.n < self.total:
                parts.append(f"ETA {_clock(per * (self.total - self.n))}")
        return "  ".join(parts)

    def _line(self) -> None:
        self.last_line = self.n
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar; in line mode, print the last step if it was not printed yet."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n > self.start and self.last_line != self.n:
            self._line()
