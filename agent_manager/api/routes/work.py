"""What workers call: claim (long-poll), heartbeat, report."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from agent_manager.api.deps import ManagerDep, SettingsDep, Worker
from agent_manager.core.auth import Principal
from agent_manager.errors import AgentManagerError, InvalidRequest, StaleClaim
from agent_manager.logs import set_context
from agent_manager.metrics import Metrics
from agent_manager.schemas import (
    ClaimBatch,
    ClaimPublic,
    ClaimRequest,
    ErrorBody,
    HeartbeatIn,
    HeartbeatOut,
    LockCreate,
    LockPublic,
    ReleaseOut,
    ResultAck,
    ResultBatch,
    ResultBatchAck,
    ResultCreate,
)

router = APIRouter(prefix="/v1", tags=["work"])
log = logging.getLogger("agent_manager.work")


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


MetricsDep = Annotated[Metrics, Depends(_metrics)]

AgentId = Annotated[
    str,
    Query(min_length=1, max_length=128, pattern=r"^[\w.:@-]+$", description="this worker's id"),
]
Roles = Annotated[
    list[str] | None,
    Query(description="role(s) to claim; repeat or comma-separate. Default: the token's roles"),
]
Wait = Annotated[float, Query(ge=0, description="seconds to long-poll for a step")]


def _roles(asked: list[str] | None, principal: Principal) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(r.strip() for a in asked or [] for r in a.split(",")))
    if any(not r for r in roles):
        raise InvalidRequest("role: a role name is empty")
    if not roles:
        if principal.roles:
            return tuple(sorted(principal.roles))
        raise InvalidRequest("role: give at least one role to claim (?role=analyst)")
    principal.require_roles(roles)
    return roles


async def _claim_for(
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    principal: Principal,
    agent_id: str,
    roles: tuple[str, ...],
    wait: float,
    limit: int = 1,
) -> list[ClaimPublic]:
    if wait > settings.max_claim_wait:
        raise InvalidRequest(f"wait: at most {settings.max_claim_wait:g} seconds")
    set_context(agent_id=agent_id)
    started = time.monotonic()
    claims = await manager.claim_waiting(
        agent_id=agent_id, roles=roles, wait=wait, limit=limit, token_id=principal.token_id
    )
    if claims and wait and await request.is_disconnected():
        # The long-poll's client is gone: nobody would run these; hand them back now
        # rather than when their leases lapse.
        for c in claims:
            await manager.release_claim(
                task_id=c.task_id,
                step_id=c.step.id,
                claim_token=c.claim_token,
                reason="the claiming client disconnected",
            )
        claims = []
    metrics: Metrics = request.app.state.metrics
    metrics.observe_claim(roles, [c.step.role for c in claims], time.monotonic() - started)
    if len(claims) == 1:  # the rest of this request (its access line too) names the step
        set_context(task_id=claims[0].task_id, step_id=claims[0].step.id)
    # Debug: the access line already names the step; at info every step would log twice.
    for c in claims:
        log.debug(
            "claimed: role %s, attempt %d",
            c.step.role,
            c.step.attempt,
            extra={"task_id": c.task_id, "step_id": c.step.id},
        )
    return claims


async def _claim(
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    principal: Principal,
    agent_id: str,
    roles: tuple[str, ...],
    wait: float,
) -> ClaimPublic | Response:
    claims = await _claim_for(request, manager, settings, principal, agent_id, roles, wait)
    return claims[0] if claims else Response(status_code=204)


@router.get(
    "/tasks/ready",
    response_model=ClaimPublic,
    responses={204: {"description": "nothing ready within the wait"}},
)
async def claim_ready_step(
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    principal: Worker,
    agent_id: AgentId,
    role: Roles = None,
    wait: Wait = 0.0,
) -> ClaimPublic | Response:
    """Atomically claim the oldest ready step of the given role(s); 204 if none."""
    return await _claim(
        request, manager, settings, principal, agent_id, _roles(role, principal), wait
    )


@router.get("/tasks/{role_path}/ready", response_model=ClaimPublic, tags=["seed aliases"])
async def claim_ready_step_by_path(
    request: Request,
    role_path: str,
    manager: ManagerDep,
    settings: SettingsDep,
    principal: Worker,
    agent_id: AgentId,
    role: Roles = None,
    wait: Wait = 0.0,
) -> ClaimPublic | Response:
    """The seed's alias: the role in the path."""
    roles = _roles([role_path, *(role or [])], principal)
    return await _claim(request, manager, settings, principal, agent_id, roles, wait)


@router.post(
    "/claims",
    response_model=ClaimBatch,
    responses={204: {"description": "nothing ready within the wait"}},
)
async def claim_steps(
    request: Request,
    body: ClaimRequest,
    manager: ManagerDep,
    settings: SettingsDep,
    principal: Worker,
) -> ClaimBatch | Response:
    """Claim up to ``max`` ready steps at once (a worker that runs several in parallel,
    or prefetches); long-polls until at least one is ready. 204 if none."""
    roles = _roles(body.roles, principal)
    claims = await _claim_for(
        request, manager, settings, principal, body.agent_id, roles, body.wait, body.max
    )
    return ClaimBatch(claims=claims) if claims else Response(status_code=204)


@router.post("/steps/{step_id}/release", response_model=ReleaseOut)
async def release_step(
    step_id: str, body: HeartbeatIn, manager: ManagerDep, _: Worker
) -> ReleaseOut:
    """Hand a claimed step back without running it: ready again, same attempt."""
    set_context(task_id=body.task_id, step_id=step_id, agent_id=body.agent_id)
    released = await manager.release_claim(
        task_id=body.task_id,
        step_id=step_id,
        claim_token=body.claim_token,
        reason=f"released by {body.agent_id or 'its worker'}",
    )
    if not released:
        raise StaleClaim(f"step '{step_id}' is not held by this claim")
    return ReleaseOut(released=True)


@router.post("/steps/{step_id}/heartbeat", response_model=HeartbeatOut)
async def heartbeat(
    step_id: str, body: HeartbeatIn, manager: ManagerDep, _: Worker
) -> HeartbeatOut:
    """Extend the lease of a claimed step; says whether its task was cancelled."""
    set_context(task_id=body.task_id, step_id=step_id, agent_id=body.agent_id)
    return await manager.heartbeat(
        task_id=body.task_id,
        step_id=step_id,
        claim_token=body.claim_token,
        agent_id=body.agent_id,
    )


@router.post("/locks", response_model=LockPublic, status_code=201)
async def acquire_lock(body: LockCreate, manager: ManagerDep, _: Worker) -> LockPublic:
    """Lock a workspace path for a claimed step, waiting up to ``wait`` seconds; the
    lock ends with the claim. 409 ``lock_conflict`` names the holder."""
    set_context(task_id=body.task_id, step_id=body.step_id)
    return await manager.acquire_lock(
        task_id=body.task_id,
        step_id=body.step_id,
        claim_token=body.claim_token,
        path=body.path,
        mode=body.mode,
        wait=body.wait,
    )


@router.delete("/locks/{lock_id}", status_code=204)
async def release_lock(
    lock_id: int,
    manager: ManagerDep,
    _: Worker,
    claim_token: Annotated[str, Query(min_length=1, description="the holder's claim token")],
) -> Response:
    """Release an ad-hoc lock before the step ends."""
    await manager.release_lock(lock_id=lock_id, claim_token=claim_token)
    return Response(status_code=204)


@router.post("/results/batch", response_model=ResultBatchAck)
async def report_results(
    body: ResultBatch, manager: ManagerDep, metrics: MetricsDep, _: Worker
) -> ResultBatchAck:
    """Report several results; each is handled on its own, as by ``POST /v1/results``,
    and answered in order with its ack or its error."""
    answers = await manager.report_many(body.results)
    for report, answer in zip(body.results, answers, strict=True):
        _reported(metrics, report, answer)
    return ResultBatchAck(
        results=[
            ErrorBody(code=a.code, message=a.message, details=a.details)
            if isinstance(a, AgentManagerError)
            else a
            for a in answers
        ]
    )


@router.post("/results", response_model=ResultAck)
@router.post("/report_result", response_model=ResultAck, tags=["seed aliases"])
async def report_result(
    body: ResultCreate, manager: ManagerDep, metrics: MetricsDep, _: Worker
) -> ResultAck:
    """Report a claimed step's result. Repeating the same report is safe."""
    set_context(task_id=body.task_id, step_id=body.step_id, agent_id=body.agent_id)
    try:
        ack = await manager.report_result(body)
    except AgentManagerError as exc:
        _reported(metrics, body, exc)
        raise
    _reported(metrics, body, ack)
    return ack


def _reported(
    metrics: Metrics, report: ResultCreate, answer: ResultAck | AgentManagerError
) -> None:
    """Count a report and log what became of it."""
    ids = {"task_id": report.task_id, "step_id": report.step_id}
    if isinstance(answer, AgentManagerError):
        metrics.observe_result(report.status, "rejected")
        log.info("result not accepted: %s", answer.message, extra=ids)
        return
    metrics.observe_result(report.status, answer.outcome)
    if report.status == "success":  # debug, as the claim: the access line says enough
        log.debug("result: success (attempt %d)", answer.attempt, extra=ids)
    else:
        log.log(
            logging.WARNING if answer.outcome == "failed" else logging.INFO,
            "result: failure (attempt %d, %s): %s",
            answer.attempt,
            answer.outcome,
            report.error,
            extra=ids,
        )
