"""Model secrets and registry credentials encrypted at rest (common/crypto.py).

The columns stay JSON; each value becomes one Fernet token string. Rows written before are encrypted here;
the downgrade writes them back as plain JSON objects.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from common.crypto import PREFIX, keyring_for

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_endpoints = sa.table("endpoints", sa.column("id", sa.Integer), sa.column("secrets", sa.JSON),
                      sa.column("image_credentials", sa.JSON))


def _keyring():  # noqa: ANN202 - common.crypto.Keyring
    from common.config import get_settings

    settings = op.get_context().config.attributes.get("settings") or get_settings()
    return keyring_for(settings)


def _rewrite(convert) -> None:  # noqa: ANN001 - value -> value
    bind = op.get_bind()
    rows = bind.execute(sa.select(_endpoints.c.id, _endpoints.c.secrets, _endpoints.c.image_credentials)).all()
    for row_id, secrets, credentials in rows:
        new_secrets, new_credentials = convert(secrets), convert(credentials)
        if (new_secrets, new_credentials) != (secrets, credentials):
            bind.execute(_endpoints.update().where(_endpoints.c.id == row_id)
                         .values(secrets=new_secrets, image_credentials=new_credentials))


def upgrade() -> None:
    keyring = _keyring()
    _rewrite(lambda v: v if v is None or (isinstance(v, str) and v.startswith(PREFIX)) else keyring.encrypt(v))


def downgrade() -> None:
    keyring = _keyring()
    _rewrite(lambda v: keyring.decrypt(v) if isinstance(v, str) and v.startswith(PREFIX) else v)
