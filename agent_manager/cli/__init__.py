"""The ``am`` command line."""

from agent_manager.cli.main import app, main

__all__ = ["app", "main"]
