"""Write-ahead-log sequence numbers on versions and events (idempotent replay).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 07:54:02.368183
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_events_model_id_seq", ["model_id", "seq"], unique=False)

    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("applied_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("applied_seq")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_model_id_seq")
        batch_op.drop_column("seq")
