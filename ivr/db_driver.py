"""A few hot statements run straight on the driver's cursor, SQLAlchemy's types kept.

Every webhook loads its call and writes it back. Through SQLAlchemy each such statement
cost about three times what the driver takes to run it (the execution context, the result
object, the ORM's loading around it: docs/performance-log.md). A ``DriverStatement`` is a Core
statement compiled once per dialect and run on the cursor of the session's own connection,
in its transaction; its parameters and rows still pass through the columns' own SQLAlchemy
type processing (dates on SQLite, JSON, our enums), so what is stored and read is exactly
what SQLAlchemy would store and read. What stays the same as a SQLAlchemy execution:

- the engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners see the
  statement (ivr.db's durable-commit rule reads the statement's execution options from the
  context they are given);
- a driver error is raised as SQLAlchemy raises it, a connection the server dropped
  invalidated, so ``DBAPIError.connection_invalidated`` still tells a retry it may.

Only for statements with plain bound parameters (no expanding ``IN``).

On PostgreSQL a webhook's first statements and its last go another way: as one simple query,
``BEGIN`` before them (``begin_with``) or ``COMMIT`` after (``execute_committing``), each
statement prepared on the connection and run by ``EXECUTE``. psycopg sends ``BEGIN`` and
``COMMIT`` as round trips of their own; this way a webhook makes two. The reads a state will
ask can go with the first (``ReadAhead``), each answering its read once in the transaction.

ivr.db_rows makes such a row the mapped object code works on.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import select
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement

if TYPE_CHECKING:
    from ivr.db_webhook import DbHandle

M = TypeVar("M")

_Processor = Callable[[Any], Any] | None
# (index, conversion) of each column of a row that converts.
_Conversions = tuple[tuple[int, Callable[[Any], Any]], ...]


@dataclass(frozen=True)
class DriverContext:
    """What the engine's cursor listeners are given for a driver statement's context."""

    execution_options: Mapping[str, Any]
    executemany: bool = False


@dataclass
class _Compiled:
    """One statement's SQL for one dialect, and how its parameters and rows convert."""

    sql: str
    positional: tuple[str, ...] | None  # parameter names in order, for positional drivers
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # only parameters that convert
    fixed: Mapping[str, Any]  # the values of parameters the statement itself holds
    # (index, conversion) of each selected column that converts (most do not), from the
    # first result's description (a driver's type codes choose some, PostgreSQL's numerics).
    results: _Conversions | None = None
    # PostgreSQL: the statement as prepared on a connection (``$n`` parameters), its name
    # there and its parameters' names in order, once asked for (``_Folded``).
    folded: _Folded | None = None


@dataclass
class DriverStatement:
    """A Core statement, compiled once per dialect, run on a connection's driver cursor."""

    statement: ClauseElement
    _compiled: dict[str, _Compiled] = field(default_factory=dict, init=False, repr=False)
    _contexts: dict[bool, DriverContext] = field(default_factory=dict, init=False, repr=False)

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            done: Any = self.statement.compile(dialect=dialect)
            binds = []
            fixed = {}
            for name, bind in done.binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    binds.append((name, process))
                if not bind.required:  # literal(...): a value of the statement's own
                    fixed[name] = bind.effective_value
            positional = tuple(done.positiontup or ()) if dialect.positional else None
            compiled = _Compiled(done.string, positional, tuple(binds), fixed)
            self._compiled[dialect.name] = compiled
        return compiled

    def _params(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**compiled.fixed, **params} if compiled.fixed else dict(params)
        for name, process in compiled.binds:
            if name in values:
                values[name] = process(values[name])
        if compiled.positional is not None:
            return tuple(values[name] for name in compiled.positional)
        return values

    def _context(self, many: bool) -> DriverContext:
        """The context cursor listeners are given (the statement's options never change)."""
        context = self._contexts.get(many)
        if context is None:
            options = self.statement.get_execution_options()  # type: ignore[attr-defined]
            context = self._contexts[many] = DriverContext(options, many)
        return context

    def _run(self, connection: Connection, params: Any, many: bool) -> Any:
        compiled = self._for(connection.dialect)
        args = ([self._params(compiled, one) for one in params] if many
                else self._params(compiled, params))
        sql = compiled.sql
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        before = after = None
        if connection._has_events or connection.engine._has_events:
            # Only cursor listeners need a context (a "begin" listener sets these flags too).
            dispatch = connection.dispatch
            before, after = dispatch.before_cursor_execute, dispatch.after_cursor_execute
            if not (before or after):
                before = after = None
        context = None if before is None else self._context(many)
        try:
            if before is not None:
                for listener in before:
                    sql, args = listener(connection, cursor, sql, args, context, many)
            if many:
                cursor.executemany(sql, args)
            else:
                cursor.execute(sql, args)
            if after is not None:
                after(connection, cursor, sql, args, context, many)
        except BaseException as exc:
            # Raised as SQLAlchemy raises it; a dropped connection is invalidated.
            connection._handle_dbapi_exception(exc, sql, args, cursor, None)
        return cursor

    def _fetch(self, connection: Connection, params: Mapping[str, Any],
               every: bool) -> list[tuple[Any, ...]]:
        cursor = self._run(connection, params, many=False)
        try:
            fetched = cursor.fetchall() if every else [cursor.fetchone()]
            results = self._results(connection.dialect,
                                    [described[1] for described in cursor.description])
        finally:
            cursor.close()
        return [_converted(results, row) for row in fetched if row is not None]

    def _results(self, dialect: Dialect, type_codes: Sequence[Any]) -> _Conversions:
        compiled = self._for(dialect)
        if compiled.results is None:
            columns = getattr(self.statement, "selected_columns", ())
            processes: list[_Processor] = [
                column.type.dialect_impl(dialect).result_processor(dialect, type_code)
                for column, type_code in zip(columns, type_codes, strict=True)]
            compiled.results = tuple((i, process) for i, process in enumerate(processes)
                                     if process is not None)
        return compiled.results

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, each column converted as SQLAlchemy converts it; None if none."""
        rows = self._fetch(connection, params, every=False)
        return rows[0] if rows else None

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row, each column converted as SQLAlchemy converts it."""
        return self._fetch(connection, params, every=True)

    def scalar(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The first row's first column (converted), or None."""
        row = self.first(connection, params)
        return None if row is None else row[0]

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run it once (a write)."""
        self._run(connection, params, many=False).close()

    def executemany(self, connection: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per set of parameters (rows of one insert)."""
        if len(params) == 1:
            self.execute(connection, params[0])
        elif params:
            self._run(connection, params, many=True).close()

    def execute_committing(self, connection: Connection, params: Mapping[str, Any],
                           commit: Callable[[Connection], bytes], *, read_later: bool = False,
                           ) -> Callable[[float | None], object] | None:
        """Run it (a write) and then ``commit(connection)``, the SQL that ends the
        transaction (asked for once the statement's listeners have seen it), in one round
        trip: PostgreSQL only. The caller still ends the connection's transaction, which
        then has nothing left to send.

        With ``read_later`` the answer is not waited for: what is returned reads it (within
        the seconds it is given, else TimeoutError), raising what the write or the commit
        met; until then the connection must be sent nothing (ivr.db_webhook)."""
        batch = _Simple(connection)
        batch.add(self, params)
        batch.start(lambda: b"; " + commit(connection))
        if read_later:
            return batch.finish
        batch.finish(None)
        return None

    def all_in(self, db: DbHandle, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """``all`` in ``db``'s transaction: the rows read ahead for it (``ReadAhead``) if
        they were, else read now."""
        kept = _kept(db, self, params)
        return self.all(db.connection(), params) if kept is None else kept

    def scalar_in(self, db: DbHandle, params: Mapping[str, Any]) -> Any:
        """``scalar`` in ``db``'s transaction, read ahead or now (``all_in``)."""
        kept = _kept(db, self, params)
        if kept is None:
            return self.scalar(db.connection(), params)
        return kept[0][0] if kept else None

    def execute_in(self, db: DbHandle, params: Mapping[str, Any]) -> None:
        """``execute`` in ``db``'s transaction, unless it ran ahead (a row lock, say)."""
        if _kept(db, self, params) is None:
            self.execute(db.connection(), params)

    def _prepared_on(self, connection: Connection) -> _Folded:
        """The statement as prepared on this PostgreSQL connection (prepared there on first
        use: one round trip, once per connection)."""
        compiled = self._for(connection.dialect)
        folded = compiled.folded
        if folded is None:
            folded = compiled.folded = _Folded.of(compiled.sql)
        prepared: set[bytes] = connection.info.setdefault(_PREPARED, set())
        if folded.name not in prepared:
            dbapi = cast(Any, connection.connection.dbapi_connection)
            _check(dbapi, dbapi.pgconn.prepare(folded.name, folded.sql))
            prepared.add(folded.name)
        return folded

    def _loaded(self, connection: Connection, result: Any) -> list[tuple[Any, ...]]:
        """libpq's rows of this statement, converted as SQLAlchemy converts them."""
        rows = _load_rows(connection, result)
        if not rows:
            return []
        types = [result.ftype(i) for i in range(result.nfields)]
        conversions = self._results(connection.dialect, types)
        return [_converted(conversions, row) for row in rows]


# A read: a statement and its parameters.
_Read = tuple["DriverStatement", Mapping[str, Any]]


@dataclass(frozen=True)
class ReadAhead:
    """A read sent with a webhook's first statement (its round trip shared), and which read
    its rows answer later in the transaction (``all_in``, ``scalar_in``, ``execute_in``).

    ``statement`` runs with ``params`` just after the call's locked load, in the same
    transaction: exactly as it would run later, unless the webhook itself wrote to what it
    reads first (none of the reads read ahead is written before it is asked). ``answers``
    is given the loaded call's columns (None: no call) and names the read its rows stand
    for, or None when they stand for none.
    """

    statement: DriverStatement
    params: Mapping[str, Any]
    answers: Callable[[Mapping[str, Any] | None], _Read | None]

    @classmethod
    def same(cls, statement: DriverStatement, params: Mapping[str, Any]) -> ReadAhead:
        """``statement`` with ``params``, read ahead as it is."""
        return cls(statement, params, lambda _call: (statement, params))

    @classmethod
    def of_the_account(cls, of_call: DriverStatement, call_sid: str, statement: DriverStatement,
                       key: str, **params: Any) -> ReadAhead:
        """``statement`` for the call's account (its id as parameter ``key``, with
        ``params``), read ahead as ``of_call``: the same read by the call's SID
        (``call_sid``, with ``params``). Nothing is kept when the call names no account."""

        def answers(call: Mapping[str, Any] | None) -> _Read | None:
            if call is None or call["account_id"] is None:
                return None
            return statement, {key: call["account_id"], **params}

        return cls(of_call, {"call_sid": call_sid, **params}, answers)


# What was read ahead in a transaction, by (statement, parameters): taken once, by the read
# it stands for (a second read of the same reads afresh).
_AHEAD = "ivr.read_ahead"


def _key(statement: DriverStatement, params: Mapping[str, Any]) -> tuple[Any, ...]:
    return (id(statement), *sorted(params.items()))


def keep_ahead(db: DbHandle, read: ReadAhead, call: Mapping[str, Any] | None,
               rows: list[tuple[Any, ...]]) -> None:
    """Keep ``read``'s rows for the read they stand for, in ``db``'s transaction."""
    answers = read.answers(call)
    if answers is None:
        return
    transaction = db.connection().get_transaction()
    kept: tuple[Any, dict[tuple[Any, ...], list[tuple[Any, ...]]]] | None = db.info.get(_AHEAD)
    if kept is None or kept[0] is not transaction:
        kept = db.info[_AHEAD] = (transaction, {})
    kept[1][_key(*answers)] = rows


def _kept(db: DbHandle, statement: DriverStatement,
          params: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
    kept = db.info.get(_AHEAD)
    if not kept:
        return None
    if kept[0] is not db.connection().get_transaction():
        # Read in a transaction since committed (a payment made durable mid-webhook) or
        # rolled back: neither its rows nor its locks hold any more.
        del db.info[_AHEAD]
        return None
    rows: list[tuple[Any, ...]] | None = kept[1].pop(_key(statement, params), None)
    return rows


def begin_with(connection: Connection, reads: Sequence[tuple[DriverStatement, Mapping[str, Any]]],
               ) -> list[list[tuple[Any, ...]]] | None:
    """``reads`` (statement, parameters) run in order as the statements that begin the
    connection's transaction, with ``BEGIN``, in one round trip on PostgreSQL: each one's
    rows, converted. Each runs after the one before it has finished (a row lock taken first
    holds for the reads after it), as if sent one by one. None where this cannot be done
    (another database, or a transaction begun already): the caller runs them itself."""
    if connection.dialect.name != "postgresql":
        return None
    dbapi = cast(Any, connection.connection.dbapi_connection)
    if dbapi.pgconn.transaction_status != _psycopg().idle:
        return None
    batch = _Simple(connection, b"BEGIN")
    for statement, params in reads:
        batch.add(statement, params)
    results = batch.send(None)
    return [statement._loaded(connection, result)
            for (statement, _), result in zip(reads, results[1:], strict=True)]


class _Simple:
    """PostgreSQL statements sent as one simple query (one round trip): each prepared on
    the connection and run by ``EXECUTE``, its parameters written as literals (``_literal``).
    The engine's cursor listeners see each statement as any other (ivr.db's durable rule)."""

    def __init__(self, connection: Connection, first: bytes = b"") -> None:
        self.connection = connection
        self.dbapi = cast(Any, connection.connection.dbapi_connection)
        self.parts = [first] if first else []
        self.sent: list[tuple[DriverStatement, _Compiled, Any]] = []
        self.cursor: Any = None
        self.escape: Callable[[bytes], bytes] | None = None

    def add(self, statement: DriverStatement, params: Mapping[str, Any]) -> None:
        connection = self.connection
        compiled = statement._for(connection.dialect)
        args = statement._params(compiled, params)
        try:
            folded = statement._prepared_on(connection)
            escape = self.escape
            if escape is None:
                escape = self.escape = _psycopg().escaping(self.dbapi.pgconn).escape_literal
            literals = b", ".join(_literal(args[name], escape, self.dbapi)
                                  for name in folded.names)
            if connection._has_events or connection.engine._has_events:
                if self.cursor is None:
                    self.cursor = self.dbapi.cursor()
                for listener in connection.dispatch.before_cursor_execute:
                    listener(connection, self.cursor, compiled.sql, args,
                             statement._context(False), False)
        except BaseException as exc:
            self._failed(exc, compiled, args)
        self.parts.append(b"EXECUTE " + folded.name + (
            b"(" + literals + b")" if folded.names else b""))
        self.sent.append((statement, compiled, args))

    def send(self, after: Callable[[], bytes] | None) -> list[Any]:
        """Send the statements (then ``after()``); libpq's results, one per statement."""
        self.start(after)
        return self.finish(None)

    def start(self, after: Callable[[], bytes] | None) -> None:
        """Send the statements (then ``after()``) without waiting for their results."""
        query = b"; ".join(self.parts) + (after() if after is not None else b"")
        try:
            self.dbapi.pgconn.send_query(query)
        except BaseException as exc:
            self._failed(exc, *self.sent[0][1:])

    def finish(self, timeout: float | None) -> list[Any]:
        """The results of what ``start`` sent, waited for no longer than ``timeout``
        seconds (None: as long as it takes; TimeoutError after that)."""
        statement, compiled, args = self.sent[0]
        try:
            results = _results_of(self.dbapi.pgconn, timeout)
            for result in results:
                _check(self.dbapi, result)
            if self.cursor is not None:
                for statement, compiled, args in self.sent:
                    self.connection.dispatch.after_cursor_execute(
                        self.connection, self.cursor, compiled.sql, args,
                        statement._context(False), False)
        except BaseException as exc:
            self._failed(exc, compiled, args)
        finally:
            if self.cursor is not None:
                self.cursor.close()
        return results

    def _failed(self, exc: BaseException, compiled: _Compiled, args: Any) -> NoReturn:
        # Raised as SQLAlchemy raises it; a dropped connection is invalidated.
        if self.cursor is not None:
            self.cursor.close()
        self.connection._handle_dbapi_exception(exc, compiled.sql, args, self.cursor, None)
        raise exc  # not reached: SQLAlchemy raised


def _literal(value: Any, escape: Callable[[bytes], bytes], dbapi: Any) -> bytes:
    """``value`` as an SQL literal for a parameter of a prepared statement: the common
    types as quoted text, which PostgreSQL reads as the parameter's own type (psycopg's
    literals, typed and adapted, cost ten times as much: 3-6 µs a value); any other type
    as psycopg writes it."""
    kind = type(value)
    if value is None:
        return b"NULL"
    if kind is bool:
        return b"true" if value else b"false"
    if kind is int:
        return str(value).encode()
    if kind is str or isinstance(value, str):  # our StrEnums too
        return escape(str(value).encode())
    if kind is datetime or kind is date:
        return escape(value.isoformat().encode())
    psycopg = _psycopg()
    if kind in psycopg.json_kinds and value.dumps is None:
        # A JSON parameter (a webhook's steps, a call's offer) as psycopg's default dumps
        # writes it, less its typed literal's cost.
        return escape(json.dumps(value.obj).encode())
    return psycopg.literal(value).as_bytes(dbapi)


def _results_of(pgconn: Any, timeout: float | None = None) -> list[Any]:
    """Every result of the query sent on ``pgconn``, waiting for each without holding the
    GIL (libpq's PQgetResult would block holding it; PQexec releases it, but returns the
    last result alone); TimeoutError once ``timeout`` seconds have passed in all."""
    results: list[Any] = []
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        while pgconn.is_busy():
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([pgconn.socket], [], [], left)[0]:
                raise TimeoutError(f"no answer from the database in {timeout} s")
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


# The names of the statements prepared on a connection (in its ``info``, which goes with
# the driver's connection: a statement prepared there lives as long as it, and a rollback
# does not undo it).
_PREPARED = "ivr.prepared"
_NAMES = itertools.count()
_PYFORMAT = re.compile(r"%\((\w+)\)s|%%")


@dataclass(frozen=True)
class _Folded:
    """A statement as PostgreSQL prepares it: ``$n`` for each named parameter."""

    name: bytes
    sql: bytes
    names: tuple[str, ...]

    @classmethod
    def of(cls, pyformat: str) -> _Folded:
        """From SQLAlchemy's psycopg SQL (``%(name)s`` parameters, ``%%`` for ``%``)."""
        names: list[str] = []

        def dollar(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%"
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        sql = _PYFORMAT.sub(dollar, pyformat)
        return cls(f"ivr_{next(_NAMES)}".encode(), sql.encode(), tuple(names))


class _Psycopg:
    """What the PostgreSQL path uses of psycopg, imported there on first use (a line on
    SQLite never loads psycopg: 23 MB), then kept: an import statement in a function looks
    the module up again on every call, several times a webhook."""

    def __init__(self) -> None:
        from psycopg import errors, pq, sql
        from psycopg.adapt import Transformer
        from psycopg.types.json import Json, Jsonb

        self.idle = pq.TransactionStatus.IDLE
        self.ok = frozenset({pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK})
        self.escaping = pq.Escaping
        self.literal = sql.Literal
        self.error_from_result = errors.error_from_result
        self.transformer = Transformer
        self.json_kinds = frozenset({Json, Jsonb})


@functools.cache
def _psycopg() -> _Psycopg:
    return _Psycopg()


def _check(dbapi: Any, result: Any) -> Any:
    """libpq's result, or the error it holds raised as psycopg raises it."""
    psycopg = _psycopg()
    if result.status in psycopg.ok:
        return result
    raise psycopg.error_from_result(result, encoding=dbapi.info.encoding)


# The Transformer that loads a connection's rows (in its ``info``, as ``_PREPARED``).
_TRANSFORMER = "ivr.transformer"


def _load_rows(connection: Connection, result: Any) -> list[tuple[Any, ...]]:
    """libpq's rows as psycopg's cursor loads them (the connection's adapters), by one
    Transformer per connection, kept as a cursor keeps its own across queries: it keeps the
    loaders it looked up, which a new one looks up again for each of a call's 60 columns."""
    transformer = connection.info.get(_TRANSFORMER)
    if transformer is None:
        transformer = connection.info[_TRANSFORMER] = _psycopg().transformer(
            cast(Any, connection.connection.dbapi_connection))
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


def _converted(results: _Conversions, row: Sequence[Any]) -> tuple[Any, ...]:
    """A driver's row with each column converted as SQLAlchemy converts it."""
    if not results:
        return tuple(row)
    values = list(row)
    for i, process in results:
        value = values[i]
        if value is not None:
            values[i] = process(value)
    return tuple(values)
