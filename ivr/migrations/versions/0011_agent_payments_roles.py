"""console roles, payments' channel and agent, agent-assisted payments and their audit

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing users keep doing what they did: they are admins.
    with op.batch_alter_table('ops_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False,
                                      server_default='admin'))
    # Existing payments were all taken by the line.
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=8), nullable=False,
                                      server_default='ivr'))
        batch_op.add_column(sa.Column('agent_username', sa.String(length=80), nullable=True))

    op.create_table(
        'agent_payments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_sid', sa.String(length=64), nullable=False),
        sa.Column('payment_sid', sa.String(length=64), nullable=True),
        sa.Column('agent_username', sa.String(length=80), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.Column('fee_cents', sa.BigInteger(), nullable=False),
        sa.Column('method', sa.String(length=8), nullable=False),
        sa.Column('bank_account_type', sa.String(length=32), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('progress', sa.JSON(), nullable=False),
        sa.Column('required', sa.JSON(), nullable=False),
        sa.Column('capturing', sa.String(length=40), nullable=True),
        sa.Column('result', sa.String(length=40), nullable=True),
        sa.Column('error', sa.String(length=120), nullable=True),
        sa.Column('payment_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('payment_sid'),
    )
    op.create_index('ix_agent_payments_call_status', 'agent_payments', ['call_sid', 'status'])

    op.create_table(
        'agent_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('username', sa.String(length=80), nullable=False),
        sa.Column('action', sa.String(length=24), nullable=False),
        sa.Column('call_sid', sa.String(length=64), nullable=False),
        sa.Column('agent_payment_id', sa.Integer(), nullable=True),
        sa.Column('payment_id', sa.Integer(), nullable=True),
        sa.Column('detail', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['agent_payment_id'], ['agent_payments.id'],
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_agent_audit_at', 'agent_audit', ['at'])
    op.create_index('ix_agent_audit_call_sid', 'agent_audit', ['call_sid'])
    op.create_index('ix_agent_audit_payment_id', 'agent_audit', ['payment_id'])


def downgrade() -> None:
    op.drop_index('ix_agent_audit_payment_id', table_name='agent_audit')
    op.drop_index('ix_agent_audit_call_sid', table_name='agent_audit')
    op.drop_index('ix_agent_audit_at', table_name='agent_audit')
    op.drop_table('agent_audit')
    op.drop_index('ix_agent_payments_call_status', table_name='agent_payments')
    op.drop_table('agent_payments')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('agent_username')
        batch_op.drop_column('channel')
    with op.batch_alter_table('ops_users', schema=None) as batch_op:
        batch_op.drop_column('role')
