"""The web dashboard: ``index.html`` at ``/``, its scripts and styles under ``/static/``.

The static files are served under ``/static/<build>/``, where ``<build>`` is a hash of
their contents, so browsers may cache them for good; ``index.html`` itself is
revalidated on every load and names the current build. The dashboard is a client of
the ``/v1`` API like any other: it needs no route of its own beyond these files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from agent_manager.web import STATIC_DIR

#: What the page may load and where it may connect: only this server. Markdown from
#: agents is sanitized before it is shown; this is the second line of defence.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def build_id(directory: Path) -> str:
    """A short hash of every file's path and contents under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class ImmutableStaticFiles(StaticFiles):
    """Static files whose URL changes with their contents: cacheable for a year."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            headers={"Cache-Control": "public, max-age=31536000, immutable", **SECURITY_HEADERS},
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


BUILD = build_id(STATIC_DIR)
STATIC_PREFIX = f"/static/{BUILD}"
_INDEX = (
    (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{static}}", STATIC_PREFIX)
)
_INDEX_ETAG = f'"{BUILD}"'

router = APIRouter(include_in_schema=False)
router.mount(STATIC_PREFIX, ImmutableStaticFiles(directory=STATIC_DIR), name="static")


@router.get("/")
async def dashboard(request: Request) -> Response:
    """The dashboard's single page (it routes by the URL's #fragment)."""
    headers = {
        "Cache-Control": "no-cache",
        "ETag": _INDEX_ETAG,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        **SECURITY_HEADERS,
    }
    if request.headers.get("if-none-match") == _INDEX_ETAG:
        return Response(status_code=304, headers=headers)
    return HTMLResponse(_INDEX, headers=headers)


@router.get("/favicon.ico")
async def favicon() -> RedirectResponse:
    """Browsers ask for /favicon.ico whatever the page says."""
    return RedirectResponse(f"{STATIC_PREFIX}/favicon.svg", status_code=308)
