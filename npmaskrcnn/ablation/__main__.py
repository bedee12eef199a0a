"""``python -m npmaskrcnn.ablation ARGS`` is ``npmaskrcnn ablate ARGS``; the worker processes
of ``--jobs`` start this way."""

from .cli import main

raise SystemExit(main())
