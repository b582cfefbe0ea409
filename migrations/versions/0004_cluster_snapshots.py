"""The committed recovery snapshot and the Redis stream position it includes (scale-out).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot_path", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("snapshot_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("snapshot_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("applied_through", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("applied_through")
        batch_op.drop_column("snapshot_seq")
        batch_op.drop_column("snapshot_sha256")
        batch_op.drop_column("snapshot_path")
