"""`wait`: poll an endpoint until it serves, fails, or time runs out, showing state and replica counts.

Semantics follow huggingface_hub's `InferenceEndpoint.wait()`: `failed` and `updateFailed` end the wait with an
error, `running` with a URL ends it successfully — once the worker has reconciled the latest generation, so
`update --wait` does not return on the old spec's `running` (nor fail on its `failed`) — and anything else keeps
polling. `paused` and `scaledToZero` end it too (`NotRunning`, exit code 3) once the worker has caught up: nothing
would wake the endpoint, so polling would only run out the timeout; a `resume` just issued is still "behind" and
keeps the wait going. `wait --wake` resumes first.

`wait_for_state` is the same loop for `pause --wait` and `scale-to-zero --wait`, which wait for those states.
"""

from __future__ import annotations

import time
from typing import Any

from cli.errors import NotRunning, WaitFailed, WaitTimeout
from cli.output import err, replicas
from controlplane.client import ControlPlaneClient, ControlPlaneUnreachable, EndpointctlHTTPError

# How long `wait` keeps polling through connection failures before it gives up.
UNREACHABLE_GRACE = 30.0

HINTS = {
    "paused": "paused: run `endpointctl resume {name}`",
    "scaledToZero": "scaled to zero: the next request or `endpointctl resume {name}` wakes it",
}


def _behind(status: dict[str, Any]) -> bool:
    """The worker has not yet reconciled the latest change (e.g. right after `update`), so `running` is stale."""
    generation, observed = status.get("generation"), status.get("observedGeneration")
    return isinstance(generation, int) and isinstance(observed, int) and observed < generation


def describe_progress(ep: dict[str, Any]) -> str:
    status = ep.get("status") or {}
    state = status.get("state") or "unknown"
    parts = [f"{ep.get('name')}: {state}"]
    counts = replicas(ep)
    if counts:
        parts.append(f"replicas {counts} ready")
    hint = HINTS.get(state)
    behind = _behind(status) and status.get("desiredState")
    if behind:
        parts.append(f"asked: {status['desiredState']}, not yet picked up by the worker")
    if hint and not behind:  # a resume just sent: "run resume" would be the wrong advice
        parts.append(hint.format(name=ep.get("name")))
    elif status.get("message"):
        parts.append(str(status["message"]))
    return " — ".join(parts)


def wait_for_running(
    client: ControlPlaneClient, namespace: str, name: str, *, timeout: float | None, interval: float = 1.0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Return the endpoint once `running` with a URL; raise `WaitFailed` / `NotRunning` / `WaitTimeout` otherwise.

    `quiet`: only the spinner (on a terminal), no line per transition (chat's wake-up says one line itself)."""
    return wait_for_state(client, namespace, name, target="running", timeout=timeout, interval=interval, quiet=quiet)


def wait_for_state(
    client: ControlPlaneClient, namespace: str, name: str, *, target: str, timeout: float | None,
    interval: float = 1.0, quiet: bool = False,
) -> dict[str, Any]:
    """Poll until the endpoint is in `target` (running: with a URL) for the latest generation."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last_line = None
    unreachable_since: float | None = None
    with err.status(f"waiting for {name}…", spinner="dots") as spinner:
        while True:
            try:
                ep = client.get_endpoint(namespace, name)
            except ControlPlaneUnreachable as exc:
                # `up` restarts a crashed API within seconds; a wait of minutes should ride that out.
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_GRACE or (deadline is not None and now >= deadline):
                    raise
                spinner.update(f"{name}: control plane unreachable, retrying ({exc})")
                time.sleep(interval)
                continue
            unreachable_since = None
            status = ep.get("status") or {}
            state = status.get("state")
            line = describe_progress(ep) if target == "running" else _progress_towards(ep, target)
            spinner.update(line)
            if line != last_line and not quiet:
                # One line per transition, so non-terminal logs (CI) show the progression too.
                err.print(line, markup=False)
                last_line = line
            stale = _behind(status)  # a failure of the previous spec says nothing about the one just sent
            if state == "failed" and not stale:
                raise WaitFailed(f"endpoint {name} failed to deploy: {status.get('message') or 'no reason given'}")
            if state == "updateFailed" and not stale:
                raise WaitFailed(f"endpoint {name} failed to update: {status.get('message') or 'no reason given'}")
            if target == "running":
                if state == "running" and status.get("url") and not stale:
                    return ep
                if state in HINTS and not stale:
                    raise NotRunning(f"endpoint {name} is {HINTS[state].format(name=name)} "
                                     "(or wait with --wake to resume it first)")
            elif state == target and not stale:
                return ep
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                wanted = "running" if target == "running" else target
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for endpoint {name} to be {wanted} (state: {state})")
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))


def _progress_towards(ep: dict[str, Any], target: str) -> str:
    status = ep.get("status") or {}
    parts = [f"{ep.get('name')}: {status.get('state') or 'unknown'}"]
    counts = replicas(ep)
    if counts:
        parts.append(f"replicas {counts} ready")
    if status.get("state") != target:
        parts.append(f"waiting for {target}")
    return " — ".join(parts)


def wait_for_deletion(client: ControlPlaneClient, namespace: str, name: str, *, timeout: float | None, interval: float = 1.0) -> None:
    """Poll until the endpoint is gone (404)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with err.status(f"waiting for {name} to be deleted…", spinner="dots"):
        while True:
            try:
                ep = client.get_endpoint(namespace, name)
            except EndpointctlHTTPError as exc:
                if exc.status_code == 404:
                    return
                raise
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                state = (ep.get("status") or {}).get("state")
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for endpoint {name} to be deleted (state: {state})")
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))
