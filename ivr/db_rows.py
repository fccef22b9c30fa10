"""A driver's row as the mapped object the ORM would have loaded, without its loading.

``MappedRow`` makes a row read by a driver statement (ivr.db_driver) the object the ORM
would have loaded (``persistent``), or an object no session tracks (``untracked``), for
code that works on mapped objects; ``attach`` gives such an object to a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sqlalchemy import Column, inspect
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, manager_of_class

if TYPE_CHECKING:
    from ivr.db_webhook import DbHandle

M = TypeVar("M")


class MappedRow(Generic[M]):
    """A model's columns in order, and a row of them made into the object the ORM would
    have loaded, without the ORM's loading (a third of a webhook's database time)."""

    def __init__(self, model: type[M]) -> None:
        mapper: Mapper[M] = inspect(model)
        attrs = tuple(mapper.column_attrs)
        self.keys = tuple(attr.key for attr in attrs)
        self.columns = tuple(cast(Column[Any], attr.columns[0]) for attr in attrs)
        if any(key != column.key for key, column in zip(self.keys, self.columns, strict=True)):
            raise TypeError(f"{model.__name__}: an attribute named unlike its column")
        self._primary_key = tuple(self.keys.index(column.key) for column in mapper.primary_key)
        self._mapper = mapper
        self._manager = manager_of_class(model)

    def untracked(self, values: Sequence[Any]) -> M:
        """An object of the row that no session tracks (its owner writes it back)."""
        obj: M = self._manager.new_instance()
        obj.__dict__.update(zip(self.keys, values, strict=True))
        return obj

    def identity_key(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """The identity key of the row's object (what a session's identity map files it by)."""
        return self._mapper.identity_key_from_primary_key(
            tuple(values[i] for i in self._primary_key))

    def persistent(self, db: Session, values: Sequence[Any]) -> M:
        """The row as ``db``'s object, as if loaded: found in its identity map, or added
        to it (the caller holds it: the identity map holds objects only weakly)."""
        found: M | None = db.identity_map.get(self.identity_key(values))
        if found is not None:
            return found
        obj = self.untracked(values)
        attach(db, obj)
        return obj

    def held(self, db: DbHandle, values: Sequence[Any]) -> M:
        """The row as the object ``db`` holds for it: ``persistent`` on a session; on a
        webhook's transaction, the session's own once it has one (ivr.db_webhook)."""
        if isinstance(db, Session):
            return self.persistent(db, values)
        return db.adopt(self, values)


def attach(db: Session, obj: object) -> None:
    """``obj``, made of a row by ``MappedRow.untracked``, as ``db``'s own, as if loaded; a
    change made to it since is kept as a change, which ``db`` writes."""
    state = instance_state(obj)
    changed = {key: obj.__dict__[key] for key in state.committed_state} if state.modified \
        else {}
    # What the row held, for the attributes changed since.
    obj.__dict__.update(state.committed_state)
    make_transient_to_detached(obj)
    # As db.add(obj), less the save-update cascade over the model's relationships, which
    # finds nothing on an object that holds only its columns (2% of a webhook).
    db._save_or_update_impl(state)
    for key, value in changed.items():
        setattr(obj, key, value)
