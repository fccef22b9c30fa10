"""call_sessions: indexed by start time (all calls, live calls), pages a fifth free

A webhook rewrites its call's row. With ``state`` in an index, every such write added an
entry to each of the table's indexes; with only columns that do not change mid-call indexed,
and room left on each page, PostgreSQL updates the row in place (a heap-only tuple update).
The calls still live (``ended_at`` unset: the card-testing limits' calls in <Pay>, the
console's calls in progress) have an index of their own, so that those reads stay small.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_call_sessions_state_started')
        batch_op.create_index('ix_call_sessions_started', ['started_at'], unique=False)
        batch_op.create_index('ix_call_sessions_live', ['started_at'], unique=False,
                              postgresql_where=sa.text('ended_at IS NULL'),
                              sqlite_where=sa.text('ended_at IS NULL'))
    if op.get_bind().dialect.name == 'postgresql':
        # New pages only; existing rows' pages fill up as before until rewritten.
        op.execute('ALTER TABLE call_sessions SET (fillfactor = 80)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE call_sessions RESET (fillfactor)')
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_call_sessions_live')
        batch_op.drop_index('ix_call_sessions_started')
        batch_op.create_index('ix_call_sessions_state_started', ['state', 'started_at'],
                              unique=False)
