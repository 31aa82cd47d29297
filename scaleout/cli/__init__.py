"""The command line: the ``scaleout`` command (scaleout.cli.commands) and the options it shares with jobs/*.py
(scaleout.cli.options). The top layer: it parses, builds configs and calls one function below it."""

from scaleout.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
