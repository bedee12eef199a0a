"""The command line's argument checking: a parser whose errors are one line, a help formatter
that shows defaults, and the argument types that refuse bad values before a command runs."""

from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line plus where to find the options, and that
    takes no abbreviated option names (``--num`` is not silently ``--num-train``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"'{self.prog} --help' lists the options\n")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default after its help, unless the help already says it or there is
    none to say (no value, or a switch that is off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default == argparse.SUPPRESS
                or action.nargs == 0):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


# ---------------------------------------------------------------------------- argument types
def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite float in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and
                                                                      value == low):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            upper = f" and <= {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}{upper}, "
                                             f"got {text}")
        return value
    return parse


def split_name(text: str) -> str:
    """An argparse type: a split name that is a plain folder name."""
    if not text or text in (".", "..") or "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"must be a plain folder name, got {text!r}")
    return text
