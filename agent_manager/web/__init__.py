"""The web dashboard: static files only (plain ES modules, no build step).

:mod:`agent_manager.api.routes.web` serves ``index.html`` at ``/`` and the rest of
``static/`` under a content-addressed prefix. The browser talks to the same ``/v1`` API
as every other client, with the token the user signs in with.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR"]
