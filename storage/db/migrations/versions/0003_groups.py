"""multi-concept dataset groups; the Element's recommended strength range

Revision ID: 0003_groups
Revises: 0002_bot_state
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_groups'
down_revision: str | None = '0002_bot_state'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('groups', sa.JSON(), nullable=False, server_default='{}'))
    with op.batch_alter_table('dataset_images') as batch:
        batch.add_column(sa.Column('group_name', sa.String(length=40), nullable=False, server_default=''))
    with op.batch_alter_table('elements') as batch:
        batch.add_column(sa.Column('strength_min', sa.Float(), nullable=True))
        batch.add_column(sa.Column('strength_max', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('elements') as batch:
        batch.drop_column('strength_max')
        batch.drop_column('strength_min')
    with op.batch_alter_table('dataset_images') as batch:
        batch.drop_column('group_name')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('groups')
