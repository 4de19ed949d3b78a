"""The built-in file tools, confined to the workspace.

``read_file``, ``write_file``, ``append_file``, ``list_files`` and ``search_text``
resolve every path with :meth:`~agent_manager.agents.tools.ToolContext.resolve`, which
refuses absolute paths, ``..`` and symlinks that lead outside the workspace, and hold
``ctx.lock(path, mode)`` around each read or write of a file. Problems become
:class:`~agent_manager.agents.tools.ToolError`, which the registry hands to the model as
an ``"error: …"`` observation.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent_manager.agents.tools import Tool, ToolContext, ToolError, ToolFunc, ToolRegistry

_MAX_READ = 20_000
_MAX_SEARCH_FILE = 1_000_000  # bytes; larger files are skipped by search_text


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadFileInput(_Input):
    path: str = Field(description="file path relative to the workspace")
    offset: int = Field(default=0, ge=0, description="first character to return")
    max_chars: int = Field(default=_MAX_READ, ge=1, le=200_000)


class WriteFileInput(_Input):
    path: str = Field(description="file path relative to the workspace")
    content: str = Field(description="the complete new content of the file")


class AppendFileInput(_Input):
    path: str = Field(description="file path relative to the workspace")
    content: str = Field(description="text to add at the end of the file")


class ListFilesInput(_Input):
    path: str = Field(default=".", description="folder relative to the workspace")
    recursive: bool = True
    max_entries: int = Field(default=500, ge=1, le=5000)


class SearchTextInput(_Input):
    query: str = Field(min_length=1, description="text (or regular expression) to find")
    path: str = Field(default=".", description="file or folder to search, workspace-relative")
    regex: bool = False
    case_sensitive: bool = False
    max_results: int = Field(default=50, ge=1, le=1000)


def _folder(ctx: ToolContext, path: str) -> Path:
    """Like :meth:`ToolContext.resolve`, but ``.`` / empty names the workspace itself."""
    if path.strip() in ("", ".", "./"):
        if not ctx.workspace.is_dir():
            raise ToolError(f"the workspace {ctx.workspace} does not exist")
        return ctx.workspace.resolve()
    return ctx.resolve(path)


def _read_text(target: Path) -> str:
    # errors="replace": a stray byte should not make a whole file unreadable to the model.
    return target.read_text(encoding="utf-8", errors="replace")


async def read_file(args: ReadFileInput, ctx: ToolContext) -> str:
    """Read a text file from the workspace (long files in pages: use offset)."""
    target = ctx.resolve(args.path)
    rel = ctx.relative(target)
    async with ctx.lock(rel, "read"):
        if not target.exists():
            raise ToolError(f"file '{rel}' does not exist")
        if not target.is_file():
            raise ToolError(f"'{rel}' is not a file")
        text = await asyncio.to_thread(_read_text, target)
    chunk = text[args.offset : args.offset + args.max_chars]
    end = args.offset + len(chunk)
    if args.offset == 0 and end >= len(text):
        return chunk
    more = f"; call again with offset={end} for more" if end < len(text) else ""
    return f"[characters {args.offset}-{end} of {len(text)}{more}]\n{chunk}"


async def write_file(args: WriteFileInput, ctx: ToolContext) -> str:
    """Create or overwrite a text file in the workspace (folders are created as needed)."""
    target = ctx.resolve(args.path)
    rel = ctx.relative(target)
    async with ctx.lock(rel, "write"):
        if target.is_dir():
            raise ToolError(f"'{rel}' is a folder, not a file")
        await asyncio.to_thread(_write, target, args.content, "w")
    return f"wrote {len(args.content)} characters to '{rel}'"


async def append_file(args: AppendFileInput, ctx: ToolContext) -> str:
    """Append text to a file in the workspace (created if missing)."""
    target = ctx.resolve(args.path)
    rel = ctx.relative(target)
    async with ctx.lock(rel, "write"):
        if target.is_dir():
            raise ToolError(f"'{rel}' is a folder, not a file")
        await asyncio.to_thread(_write, target, args.content, "a")
    return f"appended {len(args.content)} characters to '{rel}'"


def _write(target: Path, content: str, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open(mode, encoding="utf-8") as fh:
        fh.write(content)


async def list_files(args: ListFilesInput, ctx: ToolContext) -> str:
    """List the files in a workspace folder (folders end with '/')."""
    # No lock: listing names reads no file's content, and locking a folder would
    # mean nothing to the server's per-file locks.
    folder = _folder(ctx, args.path)
    if not folder.exists():
        raise ToolError(f"folder '{args.path}' does not exist")
    if not folder.is_dir():
        raise ToolError(f"'{args.path}' is a file, not a folder; use read_file")
    entries = await asyncio.to_thread(_walk, ctx, folder, args.recursive, args.max_entries + 1)
    if not entries:
        return f"'{ctx.relative(folder)}' is empty"
    lines = entries[: args.max_entries]
    if len(entries) > args.max_entries:
        lines.append(f"… more entries not shown (max_entries={args.max_entries})")
    return "\n".join(lines)


def _walk(ctx: ToolContext, folder: Path, recursive: bool, limit: int) -> list[str]:
    root = ctx.workspace.resolve()
    out: list[str] = []
    # os.walk does not follow symlinked folders, so a link out of the workspace is
    # listed as a name but never entered.
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        here = Path(current)
        for name in dirs:
            out.append((here / name).relative_to(root).as_posix() + "/")
        for name in sorted(files):
            out.append((here / name).relative_to(root).as_posix())
        if len(out) >= limit or not recursive:
            break
    return sorted(out)[:limit]


async def search_text(args: SearchTextInput, ctx: ToolContext) -> str:
    """Find lines containing a text (or regex) in workspace files: 'path:line: text'."""
    start = _folder(ctx, args.path)
    if not start.exists():
        raise ToolError(f"'{args.path}' does not exist")
    flags = 0 if args.case_sensitive else re.IGNORECASE
    try:
        pattern = re.compile(args.query if args.regex else re.escape(args.query), flags)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {args.query!r}: {exc}") from exc
    files = [start] if start.is_file() else await asyncio.to_thread(_files_under, ctx, start)
    hits: list[str] = []
    for target in files:
        rel = ctx.relative(target)
        async with ctx.lock(rel, "read"):
            text = await asyncio.to_thread(_searchable_text, target)
        for number, line in enumerate((text or "").splitlines(), start=1):
            if pattern.search(line):
                hits.append(f"{rel}:{number}: {line.strip()[:300]}")
                if len(hits) >= args.max_results:
                    return "\n".join([*hits, f"… stopped at max_results={args.max_results}"])
    return "\n".join(hits) if hits else f"no matches for {args.query!r}"


def _files_under(ctx: ToolContext, folder: Path) -> list[Path]:
    root = ctx.workspace.resolve()
    found = []
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            target = (Path(current) / name).resolve()
            # A symlinked file pointing out of the workspace is not searched.
            if root in target.parents and target.is_file():
                found.append(target)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _searchable_text(target: Path) -> str | None:
    """The file's text, or None for large or binary files, which search skips."""
    try:
        if target.stat().st_size > _MAX_SEARCH_FILE:
            return None
        data = target.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def file_tools() -> list[Tool]:
    """Fresh instances of the built-in workspace file tools."""
    specs: list[tuple[str, ToolFunc, type[BaseModel]]] = [
        ("read_file", read_file, ReadFileInput),
        ("write_file", write_file, WriteFileInput),
        ("append_file", append_file, AppendFileInput),
        ("list_files", list_files, ListFilesInput),
        ("search_text", search_text, SearchTextInput),
    ]
    return [
        Tool(name=name, description=(inspect.getdoc(fn) or "").strip(), input_model=model, func=fn)
        for name, fn, model in specs
    ]


def default_registry(*, timeout: float | None = 60.0) -> ToolRegistry:
    """A new registry holding the built-in file tools; add your own to it freely."""
    return ToolRegistry(file_tools(), timeout=timeout)


__all__ = [
    "AppendFileInput",
    "ListFilesInput",
    "ReadFileInput",
    "SearchTextInput",
    "WriteFileInput",
    "append_file",
    "default_registry",
    "file_tools",
    "list_files",
    "read_file",
    "search_text",
    "write_file",
]
