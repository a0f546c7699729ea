"""One command line, ``visionops``, with a sub-command group per area: pipeline, registry, predict, ui."""

from visionops.cli.main import main

__all__ = ["main"]
