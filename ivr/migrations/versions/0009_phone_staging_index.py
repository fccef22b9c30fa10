"""staged phone numbers indexed by import and account (a large import merges in short chunks)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 05:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_account_phones_staging_import_account', 'account_phones_staging',
                    ['import_id', 'account_number'])


def downgrade() -> None:
    op.drop_index('ix_account_phones_staging_import_account',
                  table_name='account_phones_staging')
