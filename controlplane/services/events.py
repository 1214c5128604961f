"""Reading an endpoint's events, newest first, a page at a time (the worker writes them with `record_event`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.models import Endpoint, Event

MAX_PAGE = 500


def list_events(session: Session, endpoint: Endpoint, *, limit: int = 50,
                before: int | None = None) -> tuple[Sequence[Event], int | None]:
    """One page of events and the `before` cursor of the next page (None when this is the last one)."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Event).where(Event.endpoint_id == endpoint.id)
    if before is not None:
        query = query.where(Event.id < before)
    rows = session.scalars(query.order_by(Event.id.desc()).limit(limit + 1)).all()
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_before
