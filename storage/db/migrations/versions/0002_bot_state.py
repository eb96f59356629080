"""bot state that survives a restart (pending confirmations, attachment picks, command-sync hash)

Revision ID: 0002_bot_state
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002_bot_state'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('bot_state',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'key', name=op.f('pk_bot_state'))
    )
    with op.batch_alter_table('bot_state', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bot_state_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('bot_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bot_state_expires_at'))
    op.drop_table('bot_state')
