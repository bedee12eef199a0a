"""``python -m npmaskrcnn.ablation ARGS`` is ``npmaskrcnn ablate ARGS``; the worker processes
of ``--jobs`` start this way."""

from .cli import main

if __name__ == "__main__":  # importing the package's modules (a docs tool, a scan) runs nothing
    raise SystemExit(main())
