"""The observed column has one shape: `ObservedStatus` goes in and comes out, anything else is refused at the
boundary, on write and on read, by a real database round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from common.models import Base, Endpoint
from common.observed import AutoscaleSample, ObservedReplica, ObservedStatus


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _endpoint(observed: object) -> Endpoint:
    return Endpoint(namespace="alice", name="demo", spec={}, secrets={}, observed=observed)


def test_a_status_round_trips_typed(engine: sa.Engine) -> None:
    status = ObservedStatus(replicas=(ObservedReplica(name="r1-0", ready=True, url="http://127.0.0.1:9", revision=1,
                                                      phase="Running"),),
                            revision=1, last_ready_revision=1,
                            autoscale_history=(AutoscaleSample(at=5.0, replicas=2),))
    with Session(engine) as session:
        session.add(_endpoint(status))
        session.add(Endpoint(namespace="alice", name="new", spec={}, secrets={}))  # the column's default
        session.commit()
    with Session(engine) as session:
        rows = dict(session.execute(sa.select(Endpoint.name, Endpoint.observed)).all())
    assert rows["demo"] == status and rows["demo"].ready_urls() == ["http://127.0.0.1:9"]
    assert rows["new"] == ObservedStatus()
    with engine.connect() as conn:  # stored compactly: defaults are left out
        raw = conn.execute(sa.text("SELECT observed FROM endpoints WHERE name = 'new'")).scalar_one()
    assert raw == "{}"


@pytest.mark.parametrize("bad", [{"replicas": [{"name": "r0"}]}, {"autoscale_history": [[5.0, 2]]},
                                 {"a_key_nobody_declared": 1}])
def test_a_document_of_another_shape_is_refused_on_write(engine: sa.Engine, bad: dict) -> None:
    with Session(engine) as session:
        session.add(_endpoint(bad))
        with pytest.raises(StatementError, match="validation error"):
            session.commit()


def test_a_row_of_another_shape_is_refused_on_read(engine: sa.Engine) -> None:
    with Session(engine) as session:
        session.add(_endpoint(ObservedStatus()))
        session.commit()
    with engine.begin() as conn:  # written around the model, as a pre-0004 worker did
        conn.execute(sa.text("""UPDATE endpoints SET observed = '{"autoscale_history": [[5.0, 2]]}'"""))
    with Session(engine) as session, pytest.raises(ValueError, match="autoscale_history"):
        session.execute(sa.select(Endpoint.observed)).scalar_one()


def test_a_status_is_immutable_so_every_change_is_an_assignment_the_session_sees() -> None:
    with pytest.raises(ValueError, match="frozen"):
        ObservedStatus().revision = 3
