"""A task and a follow-up through a client generated from docs/openapi.json by openapi-python-client.

Run by api/tests/it/generated_client.rs with the generated package `orchestrator_client` on
PYTHONPATH. Arguments: the server's base URL and an API key. Every call goes through the
generated operations and typed models, with `raise_on_unexpected_status`, so a status the
document does not list or a body that does not match its schema fails the run. Prints one
JSON summary on stdout for the Rust test to check against the database; any failed check
exits non-zero with the reason on stderr.
"""

import json
import sys
import time
import uuid

from orchestrator_client import AuthenticatedClient, Client
from orchestrator_client.api.tasks import (
    create_follow_up,
    create_task,
    decide,
    edit_plan,
    get_plan,
    get_task,
    list_approvals,
    list_tasks,
    plan_versions,
    start_task,
    task_cost,
)
from orchestrator_client.models import (
    ApprovalListResponse,
    ApprovalResponse,
    ApprovalStatus,
    CostReport,
    CreateTaskRequest,
    DecideRequest,
    DecisionKind,
    EditPlanRequest,
    EditPlanStep,
    FollowUpRequest,
    PlanResponse,
    PlanVersionList,
    RequiredAction,
    Problem,
    StepStatus,
    TaskListResponse,
    TaskResponse,
    TaskStart,
    TaskStatus,
)
from orchestrator_client.types import UNSET

TERMINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PARTIAL}
DESCRIPTION = "Analyze the requirements and build a plan. Then implement core APIs."
FOLLOW_UP = "Now write a summary of the plan."
DEADLINE_SECS = 20.0
# Seconds each request may wait for the task to end (the server grants at most 60).
WAIT_SECS = 10


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def main(base_url, token):
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

    # Submit and wait for the end in the same request (`Prefer: wait`, RFC 7240): 200 with the
    # ended task and its steps, or 202 with the task as it is when the wait ran out.
    created = create_task.sync_detailed(
        client=client, body=CreateTaskRequest(description=DESCRIPTION), prefer=f"wait={WAIT_SECS}"
    )
    expect(created.status_code in (200, 202), f"create_task answered {created.status_code}: {created.content!r}")
    expect(isinstance(created.parsed, TaskResponse), f"create_task parsed as {created.parsed!r}")
    expect(
        created.headers.get("Preference-Applied") == f"wait={WAIT_SECS}",
        f"the wait was granted: {dict(created.headers)!r}",
    )
    task_id = created.parsed.id
    expect(isinstance(task_id, uuid.UUID), f"the task id is typed: {task_id!r}")
    task = created.parsed
    if created.status_code == 202:
        expect(task.steps is UNSET, "a creation answered before the end has no steps")

    # Not ended yet: wait again on the task itself, rather than polling.
    until = time.monotonic() + DEADLINE_SECS
    while task.status not in TERMINAL:
        expect(time.monotonic() < until, f"task {task_id} still {task.status} after {DEADLINE_SECS}s")
        task = get_task.sync(id=task_id, client=client, prefer=f"wait={WAIT_SECS}")
        expect(isinstance(task, TaskResponse), f"get_task parsed as {task!r}")
    expect(task.status == TaskStatus.COMPLETED, f"task ended {task.status}: {task.error!r}")
    expect(isinstance(task.result, str) and task.result, f"a completed task has a result: {task.result!r}")

    # Steps, from the typed model.
    expect(isinstance(task.steps, list) and task.steps, f"a completed task has steps: {task.steps!r}")
    for step in task.steps:
        expect(step.status == StepStatus.COMPLETED, f"step {step.position} is {step.status}")
        expect(step.agent, f"step {step.position} names its agent")
        expect(isinstance(step.output, str) and step.output, f"step {step.position} has an output")

    # Cost: totals and a line per step.
    cost = task_cost.sync(id=task_id, client=client)
    expect(isinstance(cost, CostReport), f"task_cost parsed as {cost!r}")
    expect(cost.task_id == task_id, f"the cost report is for {cost.task_id}")
    expect(cost.total.tokens_in > 0 and cost.total.tokens_out > 0, f"tokens were counted: {cost.total!r}")
    expect(
        sorted(line.step_id for line in cost.steps) == sorted(step.id for step in task.steps),
        "the cost report has one line per step",
    )
    by_step = sum(line.tokens_in for line in cost.steps) + cost.planning.tokens_in
    expect(by_step == cost.total.tokens_in, f"steps and planning add up to the total: {by_step} != {cost.total.tokens_in}")
    expect(cost.total.tokens_in == task.tokens_in, "the task's totals are the cost report's")

    # The listing holds the task, without steps.
    page = list_tasks.sync(client=client)
    expect(isinstance(page, TaskListResponse), f"list_tasks parsed as {page!r}")
    listed = [item for item in page.items if item.id == task_id]
    expect(len(listed) == 1, f"the task is listed once: {[item.id for item in page.items]}")
    expect(listed[0].steps is UNSET, "listed tasks have no steps")

    # A follow-up continues the task in its thread; the thread lists both, newest first.
    followed = create_follow_up.sync_detailed(
        id=task_id, client=client, body=FollowUpRequest(description=FOLLOW_UP), prefer=f"wait={WAIT_SECS}"
    )
    expect(followed.status_code in (200, 202), f"create_follow_up answered {followed.status_code}: {followed.content!r}")
    follow_up = followed.parsed
    expect(isinstance(follow_up, TaskResponse), f"create_follow_up parsed as {follow_up!r}")
    expect(follow_up.parent_task_id == task_id, f"the follow-up follows the task: {follow_up.parent_task_id!r}")
    expect(follow_up.thread_id == task.thread_id == task_id, f"one thread: {follow_up.thread_id!r}, {task.thread_id!r}")
    expect(task.parent_task_id is None, f"the first task follows nothing: {task.parent_task_id!r}")
    until = time.monotonic() + DEADLINE_SECS
    while follow_up.status not in TERMINAL:
        expect(time.monotonic() < until, f"follow-up {follow_up.id} still {follow_up.status} after {DEADLINE_SECS}s")
        follow_up = get_task.sync(id=follow_up.id, client=client, prefer=f"wait={WAIT_SECS}")
    expect(follow_up.status == TaskStatus.COMPLETED, f"the follow-up ended {follow_up.status}: {follow_up.error!r}")
    thread = list_tasks.sync(client=client, thread_id=follow_up.thread_id)
    expect(isinstance(thread, TaskListResponse), f"list_tasks parsed as {thread!r}")
    expect(
        [item.id for item in thread.items] == [follow_up.id, task_id],
        f"the thread is the follow-up, then the task: {[item.id for item in thread.items]}",
    )
    missing_parent = create_follow_up.sync_detailed(
        id=uuid.uuid4(), client=client, body=FollowUpRequest(description=FOLLOW_UP)
    )
    expect(missing_parent.status_code == 404, f"a follow-up of an unknown task answered {missing_parent.status_code}")
    expect(isinstance(missing_parent.parsed, Problem), f"the 404 parsed as {missing_parent.parsed!r}")

    # Errors are typed problems: an unknown id is a 404, no key is a 401.
    unknown = uuid.uuid4()
    missing = get_task.sync_detailed(id=unknown, client=client)
    expect(missing.status_code == 404, f"an unknown id answered {missing.status_code}")
    expect(isinstance(missing.parsed, Problem), f"the 404 parsed as {missing.parsed!r}")
    expect(missing.parsed.status == 404, f"the problem says {missing.parsed.status}")
    anonymous = list_tasks.sync_detailed(client=Client(base_url=base_url, raise_on_unexpected_status=True))
    expect(anonymous.status_code == 401, f"no key answered {anonymous.status_code}")
    expect(isinstance(anonymous.parsed, Problem), f"the 401 parsed as {anonymous.parsed!r}")

    # The plan, as a versioned resource: the task's steps, version 1, with its ETag.
    plan = get_plan.sync_detailed(id=task_id, client=client)
    expect(plan.status_code == 200 and isinstance(plan.parsed, PlanResponse), f"get_plan: {plan.status_code}")
    expect(plan.headers.get("ETag") == '"1"', f"the plan's ETag: {dict(plan.headers)!r}")
    expect(plan.parsed.version == 1, f"a planned task is at version 1: {plan.parsed.version}")
    expect(
        [step.id for step in plan.parsed.steps] == [step.id for step in task.steps],
        "the plan's steps are the task's",
    )
    expect(plan.parsed.steps[0].status == StepStatus.COMPLETED, f"the plan says where steps stand")
    versions = plan_versions.sync(id=task_id, client=client)
    expect(isinstance(versions, PlanVersionList), f"plan_versions parsed as {versions!r}")
    expect(versions.current_version == 1 and len(versions.versions) == 1, f"one version: {versions!r}")

    approval = approval_flow(client)
    paused = paused_flow(client)

    summary = {
        "approval": approval,
        "paused": paused,
        "plan": {
            "version": plan.parsed.version,
            "etag": plan.headers.get("ETag"),
            "created_by": plan.parsed.created_by,
            "steps": [str(step.id) for step in plan.parsed.steps],
        },
        "task_id": str(task_id),
        "created": int(created.status_code),
        "user_id": task.user_id,
        "status": task.status.value,
        "steps": [
            {"id": str(s.id), "agent": s.agent, "status": s.status.value, "tokens_in": s.tokens_in}
            for s in task.steps
        ],
        "cost": {
            "calls": cost.total.calls,
            "tokens_in": cost.total.tokens_in,
            "tokens_out": cost.total.tokens_out,
            "cost_usd": cost.total.cost_usd,
            "steps": len(cost.steps),
        },
        "listed": len(page.items),
        "follow_up": {
            "id": str(follow_up.id),
            "parent_task_id": str(follow_up.parent_task_id),
            "thread_id": str(follow_up.thread_id),
            "status": follow_up.status.value,
            "result": follow_up.result,
            "thread": [str(item.id) for item in thread.items],
        },
        "not_found": {"status": int(missing.status_code), "title": missing.parsed.title},
        "unauthorized": int(anonymous.status_code),
    }
    json.dump(summary, sys.stdout)
    print()


def approval_flow(client):
    """A calculator call that waits for approval: the wait answers when a person must act,
    the pending call is approved through the typed operation, and the task completes."""
    created = create_task.sync_detailed(
        client=client,
        body=CreateTaskRequest(description="Compute 9 * (2 + 3).", require_approval=["calculator"]),
        prefer=f"wait={WAIT_SECS}",
    )
    expect(created.status_code == 202, f"create_task answered {created.status_code}: {created.content!r}")
    task = created.parsed
    until = time.monotonic() + DEADLINE_SECS
    while task.status != TaskStatus.REQUIRES_ACTION:
        expect(time.monotonic() < until, f"task {task.id} still {task.status}")
        task = get_task.sync(id=task.id, client=client, prefer=f"wait={WAIT_SECS}")
    expect(task.required_action == RequiredAction.TOOL_APPROVAL, f"it waits for {task.required_action!r}")
    expect(len(task.pending_approvals) == 1, f"one call waits: {task.pending_approvals!r}")
    pending = task.pending_approvals[0]
    expect(pending.tool == "calculator", f"the calculator waits: {pending.tool!r}")
    decided = decide.sync(
        id=task.id, call_id=pending.call_id, client=client, body=DecideRequest(decision=DecisionKind.APPROVE)
    )
    expect(isinstance(decided, ApprovalResponse), f"decide parsed as {decided!r}")
    expect(decided.status == ApprovalStatus.APPROVED, f"the call is {decided.status}")
    twice = decide.sync_detailed(
        id=task.id, call_id=pending.call_id, client=client, body=DecideRequest(decision=DecisionKind.DENY)
    )
    expect(twice.status_code == 409 and isinstance(twice.parsed, Problem), f"a second decision: {twice.status_code}")
    while task.status not in TERMINAL:
        expect(time.monotonic() < until, f"task {task.id} still {task.status} after the approval")
        task = get_task.sync(id=task.id, client=client, prefer=f"wait={WAIT_SECS}")
    listed = list_approvals.sync(id=task.id, client=client)
    expect(isinstance(listed, ApprovalListResponse), f"list_approvals parsed as {listed!r}")
    return {
        "task_id": str(task.id),
        "status": task.status.value,
        "result": task.result,
        "call_id": str(pending.call_id),
        "listed": [item.status.value for item in listed.items],
    }


def paused_flow(client):
    """A task that starts paused: its plan waits for approval, is edited through the typed
    operation with If-Match (a stale version is a typed 412), then started."""
    created = create_task.sync_detailed(
        client=client,
        body=CreateTaskRequest(description="Research job queues. Then write a summary.", start=TaskStart.PAUSED),
        prefer=f"wait={WAIT_SECS}",
    )
    expect(created.status_code in (200, 202), f"create_task answered {created.status_code}: {created.content!r}")
    task = created.parsed
    until = time.monotonic() + DEADLINE_SECS
    while task.status != TaskStatus.REQUIRES_ACTION:
        expect(time.monotonic() < until, f"task {task.id} still {task.status}")
        task = get_task.sync(id=task.id, client=client, prefer=f"wait={WAIT_SECS}")
    expect(task.required_action == RequiredAction.PLAN_APPROVAL, f"it waits for {task.required_action!r}")
    plan = get_plan.sync_detailed(id=task.id, client=client)
    etag = plan.headers.get("ETag")
    body = EditPlanRequest(
        steps=[
            EditPlanStep(instruction="Analyse job queues.", agent="analyst", depends_on=[]),
            EditPlanStep(instruction="Write a summary.", agent="writer", depends_on=[0]),
        ]
    )
    edited = edit_plan.sync_detailed(id=task.id, client=client, body=body, if_match=etag)
    expect(edited.status_code == 200 and isinstance(edited.parsed, PlanResponse), f"edit_plan: {edited.content!r}")
    expect(edited.parsed.version == 2 and edited.headers.get("ETag") == '"2"', f"version 2: {edited.parsed!r}")
    stale = edit_plan.sync_detailed(id=task.id, client=client, body=body, if_match=etag)
    expect(stale.status_code == 412 and isinstance(stale.parsed, Problem), f"a stale edit: {stale.status_code}")
    started = start_task.sync_detailed(id=task.id, client=client)
    expect(started.status_code == 202 and isinstance(started.parsed, TaskResponse), f"start_task: {started.content!r}")
    task = started.parsed
    while task.status not in TERMINAL:
        expect(time.monotonic() < until, f"task {task.id} still {task.status} after its start")
        task = get_task.sync(id=task.id, client=client, prefer=f"wait={WAIT_SECS}")
    return {
        "task_id": str(task.id),
        "status": task.status.value,
        "created_by": edited.parsed.created_by,
        "agents": [step.agent for step in task.steps],
        "stale": int(stale.status_code),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL API_KEY")
    main(sys.argv[1], sys.argv[2])
