"""The app's own database handles that `Outbox.within()` writes through, each behind one small interface.

Each statement goes through the app's handle, not its driver underneath, so that it joins whatever transaction
the handle has open (Django's `atomic()`, a SQLAlchemy session's). Nothing here imports a database library: a
handle can only be one of a library's if that library is already imported.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, Protocol

from ..store import StorageError

ACCEPTED = (
    "a psycopg 3 or psycopg2 connection, a SQLAlchemy Connection or Session, or Django's connection / "
    "connections[alias]"
)
_NAMED = re.compile(r"%\((\w+)\)s")


class AppConnection(Protocol):
    """One of the app's database handles, on PostgreSQL."""

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run `statement` (`%(name)s` parameters) in the handle's current transaction; its rows. `StorageError`
        when the database refuses it (the transaction is then failed: the app rolls it back)."""

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the current transaction commits, where the handle can tell; else never."""


def adapt(connection: object) -> AppConnection:
    """`connection` behind `AppConnection`; `TypeError` naming what is accepted for anything else."""
    for kind in (_Psycopg, _Psycopg2, _SQLAlchemyConnection, _SQLAlchemySession, _Django):
        if kind.accepts(connection):
            return kind(connection)
    hint = ""
    name = type(connection).__name__
    if name in ("AsyncConnection", "AsyncSession", "AsyncConnectionProxy"):
        hint = (
            ": from async code, use your driver's sync bridge, e.g. "
            "`await session.run_sync(lambda session: outbox.within(session).track_sale(...))`"
        )
    raise TypeError(f"within() takes {ACCEPTED}, not {type(connection).__module__}.{name}{hint}")


def _loaded(module: str) -> Any:
    """The module if the app imported it (else the handle cannot be one of its objects)."""
    return sys.modules.get(module)


def _postgres_only(dialect: str) -> None:
    if not dialect.startswith("postgres"):
        raise TypeError(f"within() joins a PostgreSQL transaction: this connection is to {dialect}")


class _Psycopg:
    @staticmethod
    def accepts(connection: object) -> bool:
        psycopg = _loaded("psycopg")
        return psycopg is not None and isinstance(connection, psycopg.Connection)

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._error: type[Exception] = _loaded("psycopg").Error

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with self._cursor() as cursor:
                cursor.execute(statement, parameters)
                return list(cursor.fetchall())
        except self._error as exc:
            raise StorageError(str(exc).strip()) from None

    def _cursor(self) -> Any:
        """A cursor that gives tuples, whatever rows the app's connection gives by default (dicts, ...)."""
        return self._connection.cursor(row_factory=_loaded("psycopg.rows").tuple_row)

    def on_commit(self, callback: Callable[[], object]) -> None:
        """psycopg has no commit hook: delivery finds the event within a second."""


class _Psycopg2(_Psycopg):
    @staticmethod
    def accepts(connection: object) -> bool:
        extensions = _loaded("psycopg2.extensions")
        return extensions is not None and isinstance(connection, extensions.connection)

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._error = _loaded("psycopg2").Error

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        # The app's cursor factory may log, or give dicts (RealDictCursor: in column order) or lists.
        return [
            tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in super().rows(statement, parameters)
        ]

    def _cursor(self) -> Any:
        return self._connection.cursor()


class _SQLAlchemyConnection:
    @staticmethod
    def accepts(connection: object) -> bool:
        engine = _loaded("sqlalchemy.engine")
        return engine is not None and isinstance(connection, engine.Connection)

    def __init__(self, connection: Any) -> None:
        self._handle = connection
        _postgres_only(connection.dialect.name)
        sqlalchemy = _loaded("sqlalchemy")
        self._text = sqlalchemy.text
        self._error: type[Exception] = sqlalchemy.exc.SQLAlchemyError
        self._listen: Callable[..., None] = sqlalchemy.event.listen

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            result = self._handle.execute(self._text(_NAMED.sub(r":\1", statement)), parameters)
            return [tuple(row) for row in result.all()]
        except self._error as exc:
            raise StorageError(str(getattr(exc, "orig", None) or exc).strip()) from None

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._listen(self._handle, "commit", lambda *_: callback(), once=True)


class _SQLAlchemySession(_SQLAlchemyConnection):
    @staticmethod
    def accepts(connection: object) -> bool:
        orm = _loaded("sqlalchemy.orm")
        return orm is not None and isinstance(connection, orm.Session | orm.scoped_session)

    def __init__(self, connection: Any) -> None:
        bind = connection.get_bind()
        self._handle = connection
        _postgres_only(bind.dialect.name)
        sqlalchemy = _loaded("sqlalchemy")
        self._text = sqlalchemy.text
        self._error = sqlalchemy.exc.SQLAlchemyError
        self._listen = sqlalchemy.event.listen

    def on_commit(self, callback: Callable[[], object]) -> None:
        session = self._handle() if callable(self._handle) else self._handle  # a scoped_session: this scope's
        self._listen(session, "after_commit", lambda *_: callback(), once=True)


class _Django:
    @staticmethod
    def accepts(connection: object) -> bool:
        base = _loaded("django.db.backends.base.base")
        proxy = _loaded("django.utils.connection")
        return (base is not None and isinstance(connection, base.BaseDatabaseWrapper)) or (
            proxy is not None and isinstance(connection, proxy.ConnectionProxy)
        )

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        _postgres_only(connection.vendor)
        self._error: type[Exception] = _loaded("django.db").Error

    def rows(self, statement: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            with self._connection.cursor() as cursor:
                cursor.execute(statement, parameters)
                return list(cursor.fetchall())
        except self._error as exc:
            raise StorageError(str(exc).strip()) from None

    def on_commit(self, callback: Callable[[], object]) -> None:
        self._connection.on_commit(callback)
