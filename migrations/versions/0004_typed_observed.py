"""Observed status in one validated shape (common/observed.py): autoscale samples as {at, replicas} objects instead
of [time, replicas] pairs, unknown keys dropped, defaults left out.

The transformation is written out here rather than imported from `common.observed`: a migration keeps describing
the step from revision 0003's rows, whatever the model becomes later.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REPLICA_KEYS = ("name", "ready", "url", "revision", "phase", "restarts")
_SCALARS = ("service_url", "revision", "last_ready_revision", "noticed_revision")
_endpoints = sa.table("endpoints", sa.column("id", sa.Integer), sa.column("observed", sa.JSON))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _typed(old: Any) -> dict:
    """A 0003 row's observed document in the 0004 shape (what `ObservedStatus` accepts)."""
    old = old if isinstance(old, dict) else {}
    new: dict[str, Any] = {}
    replicas = []
    for r in old.get("replicas") or []:
        if isinstance(r, dict) and r.get("name") is not None:
            replica = {k: r[k] for k in _REPLICA_KEYS if r.get(k) is not None}
            replica["ready"] = bool(r.get("ready"))
            if "revision" in replica:
                replica["revision"] = int(replica["revision"])
            if "restarts" in replica:
                replica["restarts"] = int(replica["restarts"])
            replicas.append(replica)
    if replicas:
        new["replicas"] = replicas
    for key in _SCALARS:
        if old.get(key) is not None:
            new[key] = old[key] if key == "service_url" else _int_or_none(old[key])
    history = [{"at": float(h[0]), "replicas": int(h[1])} for h in old.get("autoscale_history") or []
               if isinstance(h, (list, tuple)) and len(h) == 2]
    if history:
        new["autoscale_history"] = history
    return new


def _untyped(new: Any) -> dict:
    """Back to the 0003 shape: samples as pairs again."""
    old = dict(new) if isinstance(new, dict) else {}
    if "autoscale_history" in old:
        old["autoscale_history"] = [[h["at"], h["replicas"]] for h in old["autoscale_history"]]
    return old


def _rewrite(convert) -> None:  # noqa: ANN001 - one of the two functions above
    bind = op.get_bind()
    rows = bind.execute(sa.select(_endpoints.c.id, _endpoints.c.observed)).all()
    for row_id, observed in rows:
        converted = convert(observed)
        if converted != observed:
            bind.execute(_endpoints.update().where(_endpoints.c.id == row_id).values(observed=converted))


def upgrade() -> None:
    _rewrite(_typed)


def downgrade() -> None:
    _rewrite(_untyped)
