"""call_sessions: indexed by start time only, pages a fifth free (progress updated in place)

A webhook rewrites its call's row. With ``state`` in an index, every such write added an
entry to each of the table's indexes; with only columns that never change indexed, and room
left on each page, PostgreSQL updates the row in place (a heap-only tuple update).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_call_sessions_state_started')
        batch_op.create_index('ix_call_sessions_started', ['started_at'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # New pages only; existing rows' pages fill up as before until rewritten.
        op.execute('ALTER TABLE call_sessions SET (fillfactor = 80)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE call_sessions RESET (fillfactor)')
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_call_sessions_started')
        batch_op.create_index('ix_call_sessions_state_started', ['state', 'started_at'],
                              unique=False)
