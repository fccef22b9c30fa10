"""abuse guards, console session generations, last good prompt catalog

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 23:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op



revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'guard_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('caller', sa.String(length=40), nullable=False),
        sa.Column('line', sa.String(length=40), nullable=False),
        sa.Column('call_sid', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.create_index('ix_guard_events_kind_at', ['kind', 'at'], unique=False)
        batch_op.create_index('ix_guard_events_kind_account_at', ['kind', 'account_id', 'at'],
                              unique=False)
        batch_op.create_index('ix_guard_events_kind_caller_at', ['kind', 'caller', 'at'],
                              unique=False)
        batch_op.create_index('ix_guard_events_kind_line_at', ['kind', 'line', 'at'],
                              unique=False)

    op.create_table(
        'prompt_snapshots',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('saved_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('files', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('version'),
    )
    with op.batch_alter_table('prompt_snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_prompt_snapshots_saved_at', ['saved_at'], unique=False)

    with op.batch_alter_table('verification_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('caller', sa.String(length=40), server_default='',
                                      nullable=False))
        batch_op.create_index('ix_verification_failures_caller_at', ['caller', 'failed_at'],
                              unique=False)

    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_call_sessions_state_started', ['state', 'started_at'],
                              unique=False)

    with op.batch_alter_table('ops_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_call_sessions_state_started')
    with op.batch_alter_table('ops_users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
    with op.batch_alter_table('verification_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_verification_failures_caller_at')
        batch_op.drop_column('caller')
    with op.batch_alter_table('prompt_snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_prompt_snapshots_saved_at')
    op.drop_table('prompt_snapshots')
    with op.batch_alter_table('guard_events', schema=None) as batch_op:
        batch_op.drop_index('ix_guard_events_kind_line_at')
        batch_op.drop_index('ix_guard_events_kind_caller_at')
        batch_op.drop_index('ix_guard_events_kind_account_at')
        batch_op.drop_index('ix_guard_events_kind_at')
    op.drop_table('guard_events')
