"""The arrangements an arrangement confirmation file of one interval holds (``ivr sync
push``; the file's layout in connectors/files/arrangement_file.py).

An arrangement belongs to the interval its ``created_at`` falls in, as a payment belongs to
the interval of its ``paid_at``: each interval is pushed once, so each arrangement reaches
the biller in exactly one file. Simulated calls' arrangements (posting status ``test``) are
left out, like their payments. Rows hold only what was agreed, so a file written again is
the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import selectinload

from connectors.files.arrangement_file import ArrangementRow
from ivr.db import Database
from ivr.models import Arrangement, Payment
from ivr.statuses import PostingStatus


def _created_in(start: datetime, end: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Arrangement.created_at >= start, Arrangement.created_at < end,
            Arrangement.posting_status != PostingStatus.TEST)


def count_created(database: Database, start: datetime, end: datetime) -> int:
    """How many arrangements were made in [start, end) (UTC)."""
    with database.session() as db:
        return db.scalar(select(func.count()).select_from(Arrangement)
                         .where(*_created_in(start, end))) or 0


def first_created(database: Database) -> datetime | None:
    """When the first arrangement a file would hold was made (None: none yet)."""
    with database.session() as db:
        return db.scalar(select(func.min(Arrangement.created_at))
                         .where(Arrangement.posting_status != PostingStatus.TEST))


def arrangement_rows(database: Database, start: datetime,
                     end: datetime) -> Iterator[ArrangementRow]:
    """The file's rows for arrangements made in [start, end): one per instalment, in the
    order the arrangements were made."""
    with database.session() as db:
        stmt = (select(Arrangement, Payment.confirmation_code)
                .outerjoin(Payment, Payment.id == Arrangement.down_payment_id)
                .where(*_created_in(start, end))
                .options(selectinload(Arrangement.instalments))
                .order_by(Arrangement.created_at, Arrangement.id))
        for arrangement, down_payment_code in db.execute(stmt).all():
            count = len(arrangement.instalments)
            for instalment in arrangement.instalments:
                yield ArrangementRow(
                    account_number=arrangement.account_number,
                    confirmation_number=arrangement.confirmation_code,
                    kind=str(arrangement.kind), created_at=arrangement.created_at,
                    balance_cents=arrangement.balance_cents,
                    down_payment_cents=arrangement.down_payment_cents,
                    instalment=instalment.seq, instalments=count,
                    due_date=instalment.due_date, amount_cents=instalment.amount_cents,
                    down_payment_confirmation=down_payment_code or "",
                    idempotency_key=arrangement.idempotency_key,
                    call_sid=arrangement.call_sid)
