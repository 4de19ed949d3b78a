"""The two hottest paths on PostgreSQL, each one statement in one round trip.

A claim and a successful report are what every worker does for every step, so on
PostgreSQL each is a single data-modifying CTE sent straight through the asyncpg
connection in autocommit — for one step or a batch — one round trip instead of a
BEGIN, four or five statements and a COMMIT. A statement is atomic on its own, so this changes no
guarantee: the claim still picks with ``FOR UPDATE SKIP LOCKED``; the report's fence
(the claim token), its result row, the promotion of the dependents, the task's
counter and the events all commit together or not at all.

What is left for a second transaction is the rare phase change when the task's last
work step finishes (audit, synthesis or completion); the lease reaper also sweeps for
tasks left there by a crash in between (see ``AgentManager.finish_stalled_phases``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_manager.db.queries import ClaimedRow
from agent_manager.errors import Unavailable

_CLAIM = """
WITH picked AS (
    SELECT task_id, id, has_files FROM steps
    WHERE status = 'ready' AND {role_filter} AND ready_at <= $2 {file_filter}
    ORDER BY priority DESC, ready_at, task_id, position, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE steps s
    SET status = 'claimed', agent_id = $3, claimed_at = $2, updated_at = $2,
        claim_token = replace(gen_random_uuid()::text, '-', ''),
        lease_expires_at = $2 + make_interval(secs => s.lease_seconds)
    FROM picked, tasks t
    -- A step that declares files is claimed only with its locks (db/locks.py).
    WHERE s.task_id = picked.task_id AND s.id = picked.id AND NOT picked.has_files
      AND t.id = s.task_id
    RETURNING s.task_id, s.id, s.role, s.instruction, s.depends_on, s.files, s.attempt,
              s.max_attempts, s.lease_seconds, s.lease_expires_at, s.rework_notes,
              s.rework_round, t.goal, s.claim_token, s.priority, s.ready_at, s.position,
              -- The latest successful output of each dependency, so the claimer gets
              -- its context without a second round trip.
              CASE WHEN s.depends_on = '[]'::jsonb THEN '{{}}'::jsonb ELSE
              (SELECT coalesce(jsonb_object_agg(r.step_id, r.output), '{{}}'::jsonb)
               FROM (SELECT DISTINCT ON (step_id) step_id, output FROM results
                     WHERE task_id = s.task_id AND status = 'success'
                       AND step_id IN (SELECT jsonb_array_elements_text(s.depends_on))
                     ORDER BY step_id, id DESC) r) END AS dependency_outputs
), logged AS (
    INSERT INTO events (task_id, step_id, type, data, created_at)
    SELECT task_id, id, 'step.claimed',
           jsonb_build_object('agent_id', $3::text, 'attempt', attempt, 'role', role), $2
    FROM claimed
)
SELECT c.*, (SELECT count(*) FROM picked WHERE has_files) AS file_candidates
FROM (SELECT 1) AS one LEFT JOIN claimed c ON true
ORDER BY c.priority DESC, c.ready_at, c.task_id, c.position, c.id
"""
_ONE_ROLE = "role = $1::varchar"
_ROLES = "role = ANY($1::varchar[])"
CLAIM_ONE_ROLE = _CLAIM.format(role_filter=_ONE_ROLE, file_filter="")
CLAIM_ROLES = _CLAIM.format(role_filter=_ROLES, file_filter="")
# After the steps with files among the best were found blocked: the rest, past them.
CLAIM_ONE_ROLE_NO_FILES = _CLAIM.format(role_filter=_ONE_ROLE, file_filter="AND NOT has_files")
CLAIM_ROLES_NO_FILES = _CLAIM.format(role_filter=_ROLES, file_filter="AND NOT has_files")

_CLAIMED_FIELDS = tuple(f.name for f in fields(ClaimedRow))


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection with no transaction open (so: autocommit).

    Connection failures become :class:`Unavailable`, and the broken connection is
    dropped from the pool instead of being handed out again.
    """
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        try:
            yield raw.driver_connection  # type: ignore[misc]
        except (
            OSError,
            asyncpg.PostgresConnectionError,  # class 08
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # the connection broke mid-operation
            asyncpg.AdminShutdownError,  # 57P01
            asyncpg.CrashShutdownError,  # 57P02
            asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
        ) as exc:
            await conn.invalidate(exc)
            raise Unavailable() from exc


async def claim(
    conn: asyncpg.Connection,
    *,
    roles: Sequence[str],
    agent_id: str,
    now: datetime,
    limit: int = 1,
    skip_files: bool = False,
) -> tuple[list[ClaimedRow], int]:
    """Claim the steps without files among the best ``limit`` ready steps of ``roles``
    in one statement; also returns how many of those best steps declare files.

    Claim tokens come from ``gen_random_uuid()`` (122 random bits, built into
    PostgreSQL 13+), so a batch needs no round trip per token.
    """
    one = len(roles) == 1
    if skip_files:
        sql = CLAIM_ONE_ROLE_NO_FILES if one else CLAIM_ROLES_NO_FILES
    else:
        sql = CLAIM_ONE_ROLE if one else CLAIM_ROLES
    rows = await conn.fetch(sql, roles[0] if one else list(roles), now, agent_id, limit)
    claimed = [
        ClaimedRow(**{name: row[name] for name in _CLAIMED_FIELDS})
        for row in rows
        if row["task_id"] is not None
    ]
    return claimed, rows[0]["file_candidates"] if rows else 0


REPORT_SUCCESSES = """
WITH input AS (
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[],
                         $5::text[], $6::text[], $7::int[], $8::int[], $9::int[],
                         $10::text[], $11::bool[])
        AS i(task_id, step_id, claim_token, agent_id, output, ra_history,
             prompt_tokens, completion_tokens, total_tokens, error, retryable)
), finished AS (
    UPDATE steps s
    SET status = 'done', lease_expires_at = NULL, last_error = NULL, updated_at = $12
    FROM input i
    WHERE s.task_id = i.task_id AND s.id = i.step_id AND s.claim_token = i.claim_token
      AND s.status = 'claimed'
      AND (i.agent_id IS NULL OR s.agent_id IS NULL OR s.agent_id = i.agent_id)
    RETURNING s.task_id, s.id, s.role, s.attempt, s.agent_id, s.dependents,
              s.holds_locks, s.rework_round, s.claim_token
), stored AS (
    INSERT INTO results (task_id, step_id, attempt, rework_round, claim_token, agent_id,
                         status, output, ra_history, prompt_tokens, completion_tokens,
                         total_tokens, error, retryable, outcome, created_at)
    SELECT f.task_id, f.id, f.attempt, f.rework_round, f.claim_token,
           COALESCE(i.agent_id, f.agent_id), 'success', i.output::jsonb,
           i.ra_history::jsonb, i.prompt_tokens, i.completion_tokens, i.total_tokens,
           i.error, i.retryable, 'done', $12
    FROM finished f JOIN input i ON i.claim_token = f.claim_token
    RETURNING id, claim_token, attempt
), edges AS (
    -- Two finished steps may share a dependent: count them together.
    SELECT f.task_id, d.dep_id, count(*) AS n
    FROM finished f, jsonb_array_elements_text(f.dependents) AS d(dep_id)
    GROUP BY f.task_id, d.dep_id
), promoted AS (
    UPDATE steps d
    SET remaining_deps = d.remaining_deps - e.n,
        status = CASE WHEN d.remaining_deps <= e.n THEN 'ready' ELSE d.status END,
        ready_at = CASE WHEN d.remaining_deps <= e.n THEN $12 ELSE d.ready_at END,
        updated_at = $12
    FROM edges e
    WHERE d.task_id = e.task_id AND d.id = e.dep_id AND d.status = 'pending'
    RETURNING d.task_id, d.id, d.role, d.status
), counted AS (
    UPDATE tasks t SET steps_remaining = t.steps_remaining - c.n
    FROM (SELECT task_id, count(*) AS n FROM finished GROUP BY task_id) c
    WHERE t.id = c.task_id
    RETURNING t.id, t.steps_remaining
), unlocked AS (
    DELETE FROM file_access fa USING finished f
    WHERE fa.claim_token = f.claim_token AND f.holds_locks
), logged AS (
    INSERT INTO events (task_id, step_id, type, data, created_at)
    SELECT task_id, id, 'step.done',
           jsonb_build_object('attempt', attempt, 'agent_id', agent_id), $12
    FROM finished
    UNION ALL
    SELECT task_id, id, 'step.ready', jsonb_build_object('role', role), $12
    FROM promoted WHERE status = 'ready'
)
SELECT 'result' AS kind, claim_token AS key, id AS number, attempt AS extra FROM stored
UNION ALL
SELECT 'ready', role, NULL, NULL FROM promoted WHERE status = 'ready'
UNION ALL
SELECT 'task', id, steps_remaining, NULL FROM counted
"""


@dataclass(frozen=True, slots=True)
class ReportedMany:
    acks: dict[str, tuple[int, int]]  # claim token -> (result id, attempt)
    ready_roles: list[str]
    finished_tasks: list[str]  # tasks whose last work step is now done


async def report_successes(
    conn: asyncpg.Connection, *, reports: Sequence[Any], now: datetime
) -> ReportedMany:
    """Finish many work steps in one statement. Reports whose claim is not current are
    simply absent from ``acks``; the caller handles them one by one."""
    rows = await conn.fetch(
        REPORT_SUCCESSES,
        [r.task_id for r in reports],
        [r.step_id for r in reports],
        [r.claim_token for r in reports],
        [r.agent_id for r in reports],
        [json.dumps(r.output) for r in reports],
        [json.dumps([ta.model_dump(mode="json") for ta in r.ra_history]) for r in reports],
        [r.usage.prompt_tokens for r in reports],
        [r.usage.completion_tokens for r in reports],
        [r.usage.total_tokens for r in reports],
        [r.error for r in reports],
        [False for _ in reports],  # "retryable" only means something for a failure
        now,
    )
    acks: dict[str, tuple[int, int]] = {}
    ready: list[str] = []
    finished: list[str] = []
    for kind, key, number, extra in rows:
        if kind == "result":
            acks[key] = (number, extra)
        elif kind == "ready":
            ready.append(key)
        elif number == 0:
            finished.append(key)
    return ReportedMany(acks=acks, ready_roles=ready, finished_tasks=finished)
