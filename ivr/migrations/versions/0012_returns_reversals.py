"""bank returns, notices of change, refunds and voids: reversals and their outbox rows

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONE_SUBJECT = ("(CASE WHEN payment_id IS NULL THEN 0 ELSE 1 END"
                " + CASE WHEN arrangement_id IS NULL THEN 0 ELSE 1 END"
                " + CASE WHEN reversal_id IS NULL THEN 0 ELSE 1 END) = 1")


def upgrade() -> None:
    op.create_table(
        'returns_files',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=500), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('returns', sa.Integer(), nullable=False),
        sa.Column('notices', sa.Integer(), nullable=False),
        sa.Column('not_ours', sa.Integer(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256'),
    )
    op.create_table(
        'reversals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=False),
        sa.Column('payment_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('code', sa.String(length=3), nullable=True),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.Column('effective_date', sa.Date(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('trace_number', sa.String(length=15), nullable=True),
        sa.Column('recorded_by', sa.String(length=120), nullable=False),
        sa.Column('returns_file_id', sa.Integer(), nullable=True),
        sa.Column('posting_status', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id']),
        sa.ForeignKeyConstraint(['returns_file_id'], ['returns_files.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('idempotency_key'),
    )
    op.create_index('ix_reversals_payment_id', 'reversals', ['payment_id'])
    op.create_index('ix_reversals_created_at', 'reversals', ['created_at'])
    op.create_index('ix_reversals_effective_date', 'reversals', ['effective_date'])
    op.create_index('uq_reversals_one_return', 'reversals', ['payment_id'], unique=True,
                    sqlite_where=sa.text("kind = 'return'"),
                    postgresql_where=sa.text("kind = 'return'"))
    op.create_table(
        'change_notices',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('payment_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=3), nullable=False),
        sa.Column('notice_date', sa.Date(), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('returns_file_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['payment_id'], ['payments.id']),
        sa.ForeignKeyConstraint(['returns_file_id'], ['returns_files.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_change_notices_payment_id', 'change_notices', ['payment_id'])
    op.create_index('ix_change_notices_created_at', 'change_notices', ['created_at'])
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=12), nullable=False,
                                      server_default='paid'))
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.alter_column('status', server_default=None)
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ach_off_until', sa.Date(), nullable=True))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('ck_outbox_one_subject', type_='check')
        batch_op.add_column(sa.Column('reversal_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_outbox_reversal_id', ['reversal_id'])
        batch_op.create_foreign_key('fk_outbox_reversal_id_reversals', 'reversals',
                                    ['reversal_id'], ['id'])
        batch_op.create_check_constraint('ck_outbox_one_subject', _ONE_SUBJECT)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('ck_outbox_one_subject', type_='check')
        batch_op.drop_constraint('fk_outbox_reversal_id_reversals', type_='foreignkey')
        batch_op.drop_constraint('uq_outbox_reversal_id', type_='unique')
        batch_op.drop_column('reversal_id')
        batch_op.create_check_constraint('ck_outbox_one_subject',
                                         '(payment_id IS NULL) <> (arrangement_id IS NULL)')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('ach_off_until')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('status')
    op.drop_table('change_notices')
    op.drop_index('uq_reversals_one_return', table_name='reversals')
    op.drop_index('ix_reversals_effective_date', table_name='reversals')
    op.drop_index('ix_reversals_created_at', table_name='reversals')
    op.drop_index('ix_reversals_payment_id', table_name='reversals')
    op.drop_table('reversals')
    op.drop_table('returns_files')
