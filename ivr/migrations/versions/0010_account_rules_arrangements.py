"""per-account payment rules, payment arrangements, outbox rows for arrangements

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The new account columns: the cache and the import's staging table hold the same fields.
_ACCOUNT_COLUMNS = (
    ('ach_allowed', sa.Boolean(), False, sa.true()),
    ('card_allowed', sa.Boolean(), False, sa.true()),
    ('minimum_payment_cents', sa.BigInteger(), True, None),
    ('full_payment_required', sa.Boolean(), False, sa.false()),
    ('reconnect_cents', sa.BigInteger(), True, None),
    ('service_start_date', sa.Date(), True, None),
    ('broken_arrangements_12m', sa.Integer(), False, sa.text('0')),
    ('returned_payments_12m', sa.Integer(), False, sa.text('0')),
    ('arrangement_eligible', sa.Boolean(), True, None),
)


def upgrade() -> None:
    for table in ('accounts', 'accounts_staging'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, type_, nullable, default in _ACCOUNT_COLUMNS:
                # Existing rows get the blank value; the server default then goes, as the
                # models give every new row its value.
                batch_op.add_column(sa.Column(name, type_, nullable=nullable,
                                              server_default=default))
        if any(default is not None for *_, default in _ACCOUNT_COLUMNS):
            with op.batch_alter_table(table, schema=None) as batch_op:
                for name, _type, _nullable, default in _ACCOUNT_COLUMNS:
                    if default is not None:
                        batch_op.alter_column(name, server_default=None)

    op.create_table(
        'arrangements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('confirmation_code', sa.String(length=16), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=False),
        sa.Column('call_sid', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=True),
        sa.Column('account_number', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('balance_cents', sa.BigInteger(), nullable=False),
        sa.Column('down_payment_cents', sa.BigInteger(), nullable=False),
        sa.Column('down_payment_id', sa.Integer(), nullable=True),
        sa.Column('language', sa.String(length=8), nullable=False),
        sa.Column('posting_status', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('end_reason', sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['down_payment_id'], ['payments.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('confirmation_code'),
        sa.UniqueConstraint('idempotency_key'),
    )
    op.create_index('ix_arrangements_call_sid', 'arrangements', ['call_sid'])
    op.create_index('ix_arrangements_account_number', 'arrangements', ['account_number'])
    op.create_index('ix_arrangements_created_at', 'arrangements', ['created_at'])
    op.create_index('uq_arrangements_one_active', 'arrangements', ['account_id'], unique=True,
                    sqlite_where=sa.text("status = 'active'"),
                    postgresql_where=sa.text("status = 'active'"))
    op.create_table(
        'arrangement_instalments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('arrangement_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('due_date', sa.Date(), nullable=False),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['arrangement_id'], ['arrangements.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('arrangement_id', 'seq'),
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=16), nullable=True))
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payment_purpose', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('paid_today_confirmed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('arrangement_offer', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('arrangement_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_call_sessions_arrangement_id_arrangements',
                                    'arrangements', ['arrangement_id'], ['id'],
                                    ondelete='SET NULL')
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.alter_column('paid_today_confirmed', server_default=None)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('payment_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('arrangement_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_outbox_arrangement_id', ['arrangement_id'])
        batch_op.create_foreign_key('fk_outbox_arrangement_id_arrangements', 'arrangements',
                                    ['arrangement_id'], ['id'])
        batch_op.create_check_constraint('ck_outbox_one_subject',
                                         '(payment_id IS NULL) <> (arrangement_id IS NULL)')


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('ck_outbox_one_subject', type_='check')
        batch_op.drop_constraint('fk_outbox_arrangement_id_arrangements', type_='foreignkey')
        batch_op.drop_constraint('uq_outbox_arrangement_id', type_='unique')
        batch_op.drop_column('arrangement_id')
        batch_op.alter_column('payment_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('call_sessions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_call_sessions_arrangement_id_arrangements',
                                 type_='foreignkey')
        for name in ('arrangement_id', 'arrangement_offer', 'paid_today_confirmed',
                     'payment_purpose'):
            batch_op.drop_column(name)
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_column('purpose')
    op.drop_table('arrangement_instalments')
    op.drop_index('uq_arrangements_one_active', table_name='arrangements')
    op.drop_index('ix_arrangements_created_at', table_name='arrangements')
    op.drop_index('ix_arrangements_account_number', table_name='arrangements')
    op.drop_index('ix_arrangements_call_sid', table_name='arrangements')
    op.drop_table('arrangements')
    for table in ('accounts_staging', 'accounts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, *_ in reversed(_ACCOUNT_COLUMNS):
                batch_op.drop_column(name)
