"""The commands of ``npmaskrcnn``, one module each (the parser and errors: ``cli.py``)."""
