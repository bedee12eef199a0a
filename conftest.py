"""Repository-level pytest setup: the lesson notebooks run in their fast mode in tests."""

import os

os.environ.setdefault("NPMASKRCNN_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
