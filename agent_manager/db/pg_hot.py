"""The two hottest paths on PostgreSQL, each one statement in one round trip.

A claim and a successful report are what every worker does for every step, so on
PostgreSQL each is a single data-modifying CTE sent straight through the asyncpg
connection in autocommit: one round trip instead of a BEGIN, four or five
statements and a COMMIT. A statement is atomic on its own, so this changes no
guarantee: the claim still picks with ``FOR UPDATE SKIP LOCKED``; the report's fence
(the claim token), its result row, the promotion of the dependents, the task's
counter and the events all commit together or not at all.

What is left for a second transaction is the rare phase change when the task's last
work step finishes (audit, synthesis or completion); the lease reaper also sweeps for
tasks left there by a crash in between (see ``AgentManager.finish_phases``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_manager.db.queries import ClaimedRow
from agent_manager.errors import Unavailable

CLAIM = """
WITH picked AS (
    SELECT task_id, id FROM steps
    WHERE status = 'ready' AND role = ANY($1::varchar[]) AND ready_at <= $2
    ORDER BY priority DESC, ready_at, task_id, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE steps s
    SET status = 'claimed', claim_token = $3, agent_id = $4, claimed_at = $2,
        updated_at = $2, lease_expires_at = $2 + make_interval(secs => s.lease_seconds)
    FROM picked, tasks t
    WHERE s.task_id = picked.task_id AND s.id = picked.id AND t.id = s.task_id
    RETURNING s.task_id, s.id, s.role, s.instruction, s.depends_on, s.files, s.attempt,
              s.max_attempts, s.lease_seconds, s.lease_expires_at, s.rework_notes,
              s.rework_round, t.goal
), logged AS (
    INSERT INTO events (task_id, step_id, type, data, created_at)
    SELECT task_id, id, 'step.claimed',
           jsonb_build_object('agent_id', $4::text, 'attempt', attempt, 'role', role), $2
    FROM claimed
)
SELECT * FROM claimed
"""

REPORT_SUCCESS = """
WITH finished AS (
    UPDATE steps
    SET status = 'done', lease_expires_at = NULL, last_error = NULL, updated_at = $4
    WHERE task_id = $1 AND id = $2 AND claim_token = $3 AND status = 'claimed'
      AND ($5::varchar IS NULL OR agent_id IS NULL OR agent_id = $5)
    RETURNING task_id, id, role, attempt, agent_id, dependents, holds_locks, rework_round
), stored AS (
    INSERT INTO results (task_id, step_id, attempt, rework_round, claim_token, agent_id,
                         status, output, ra_history, prompt_tokens, completion_tokens,
                         total_tokens, error, retryable, outcome, created_at)
    SELECT task_id, id, attempt, rework_round, $3, COALESCE($5, agent_id), 'success',
           $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, 'done', $4
    FROM finished
    RETURNING id, attempt
), promoted AS (
    UPDATE steps d
    SET remaining_deps = d.remaining_deps - 1,
        status = CASE WHEN d.remaining_deps <= 1 THEN 'ready' ELSE d.status END,
        ready_at = CASE WHEN d.remaining_deps <= 1 THEN $4 ELSE d.ready_at END,
        updated_at = $4
    FROM finished f
    WHERE d.task_id = f.task_id AND d.status = 'pending'
      AND d.id IN (SELECT jsonb_array_elements_text(f.dependents))
    RETURNING d.id, d.role, d.status
), counted AS (
    UPDATE tasks SET steps_remaining = steps_remaining - 1
    FROM finished f WHERE tasks.id = f.task_id
    RETURNING steps_remaining
), unlocked AS (
    DELETE FROM file_access
    WHERE claim_token = $3 AND EXISTS (SELECT 1 FROM finished WHERE holds_locks)
), logged AS (
    INSERT INTO events (task_id, step_id, type, data, created_at)
    SELECT task_id, id, 'step.done',
           jsonb_build_object('attempt', attempt, 'agent_id', agent_id), $4
    FROM finished
    UNION ALL
    SELECT $1, id, 'step.ready', jsonb_build_object('role', role), $4
    FROM promoted WHERE status = 'ready'
)
SELECT (SELECT id FROM stored) AS result_id,
       (SELECT attempt FROM stored) AS attempt,
       (SELECT steps_remaining FROM counted) AS steps_remaining,
       (SELECT coalesce(jsonb_agg(role), '[]'::jsonb) FROM promoted
        WHERE status = 'ready') AS ready_roles
"""


@dataclass(frozen=True, slots=True)
class ReportedRow:
    result_id: int
    attempt: int
    steps_remaining: int
    ready_roles: list[str]


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
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            await conn.invalidate(exc)
            raise Unavailable() from exc


async def claim(
    conn: asyncpg.Connection,
    *,
    roles: Sequence[str],
    agent_id: str,
    claim_token: str,
    now: datetime,
) -> ClaimedRow | None:
    row = await conn.fetchrow(CLAIM, list(roles), now, claim_token, agent_id)
    return ClaimedRow(*row.values()) if row is not None else None


async def report_success(
    conn: asyncpg.Connection,
    *,
    task_id: str,
    step_id: str,
    claim_token: str,
    agent_id: str | None,
    output: Any,
    ra_history: list[dict[str, Any]],
    prompt_tokens: int,
    completion_tokens: int,
    total_tokens: int,
    error: str | None,
    retryable: bool,
    now: datetime,
) -> ReportedRow | None:
    """Finish a work step for the current claim; None when the claim is not current."""
    row = await conn.fetchrow(
        REPORT_SUCCESS,
        task_id,
        step_id,
        claim_token,
        now,
        agent_id,
        json.dumps(output),
        json.dumps(ra_history),
        prompt_tokens,
        completion_tokens,
        total_tokens,
        error,
        retryable,
    )
    if row is None or row["result_id"] is None:
        return None
    return ReportedRow(
        result_id=row["result_id"],
        attempt=row["attempt"],
        steps_remaining=row["steps_remaining"],
        ready_roles=list(row["ready_roles"]),
    )
