"""Result rows read by column name, and Structs written as statement parameters: how the store maps.

Every result row is read through one mechanism: a `RowShape` names its columns once, as the
parameters of its builder (written out, or made from a Struct's fields); psycopg calls its
factory once per result, which finds those names among the result's columns; each row then costs
an itemgetter and one call of the builder, about what unpacking it by position costs. Every
shape registers the named queries it reads (`ROW_SHAPES`), and a test checks each against the
columns the database says the query returns.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from keyword import iskeyword
from operator import attrgetter, itemgetter
from types import NoneType, UnionType
from typing import Annotated, Any, Generic, TypeVar, cast, get_args, get_origin
from uuid import UUID

import msgspec
from psycopg import AsyncCursor, Cursor
from psycopg.pq.abc import PGresult
from psycopg.rows import RowMaker

from scheduler.db.connections import AsyncConn
from scheduler.db.queries import q

_json_encoder = msgspec.json.Encoder()

T = TypeVar("T")
RowFactory = Callable[[AsyncCursor[Any] | Cursor[Any]], RowMaker[T]]


class RowShapeError(LookupError):
    """A result lacks a column its shape reads, or holds it twice: the query and the code disagree."""


# What a shape makes of the positions its columns were found at (in its order) in a result of
# that many columns: the function turning one row into its value.
_Bind = Callable[[tuple[int, ...], int], RowMaker[T]]


class RowShape(Generic[T]):
    """The columns the rows of some named queries are read from, and what they become."""

    __slots__ = ("_bind", "_factories", "_makers", "columns", "discarded")

    def __init__(
        self, columns: Sequence[str], bind: _Bind[T], queries: Sequence[str], *, discarded: Sequence[str] = ()
    ) -> None:
        """Register the shape as the one of ``queries``.

        ``discarded`` columns are returned for a side effect only (a ``pg_notify`` per row): they
        must be there, and are never read.
        """
        self.columns = tuple(columns)
        self.discarded = tuple(discarded)
        self._bind = bind
        self._factories: dict[str, RowFactory[T]] = {}
        # A named query's text is fixed, so its result's columns are too: the positions are found
        # once per (query, width), not on every execute (decoding 35 names cost a point read ~20 µs).
        self._makers: dict[tuple[str, int], RowMaker[T]] = {}
        for query in queries:
            if query in ROW_SHAPES:
                raise ValueError(f"query {query} has two row shapes")
            ROW_SHAPES[query] = self
            self._factories[query] = self._factory(query)

    def factory(self, query: str) -> RowFactory[T]:
        """The psycopg row factory reading the results of ``query``."""
        try:
            return self._factories[query]
        except KeyError:
            raise RowShapeError(f"query {query} is not read as ({', '.join(self.columns)})") from None

    def _factory(self, query: str) -> RowFactory[T]:
        makers = self._makers

        def factory(cursor: AsyncCursor[Any] | Cursor[Any]) -> RowMaker[T]:
            result = cursor.pgresult
            if result is None:
                return self.maker(query, result)
            key = (query, result.nfields)
            made = makers.get(key)
            if made is None:
                made = makers[key] = self.maker(query, result)
            return made

        return factory

    def maker(self, query: str, result: PGresult | None) -> RowMaker[T]:
        """Find the shape's columns in a result of ``query``; return what turns its rows into values."""
        names = [] if result is None else [(result.fname(i) or b"").decode() for i in range(result.nfields)]
        found: dict[str, int] = {}
        for position, name in enumerate(names):
            found[name] = -1 if name in found else position  # -1: there twice
        for column in (*self.columns, *self.discarded):
            at = found.get(column)
            if at is None:
                have = ", ".join(found) or "none"
                raise RowShapeError(f"query {query}: its result has no column {column!r} (it has {have})")
            if at < 0:
                raise RowShapeError(f"query {query}: its result has column {column!r} twice")
        return self._bind(tuple(found[column] for column in self.columns), len(names))


# Every named query that returns columns, with the shape its rows are read as: tests check each
# against the columns the database says the query returns.
ROW_SHAPES: dict[str, RowShape[Any]] = {}


def _nothing(_: Sequence[Any]) -> None:
    return None


def column(name: str, _kind: type[T], *queries: str, discarded: Sequence[str] = ()) -> RowShape[T]:
    """One column, read as it is (``_kind`` says what the driver gives for it)."""

    def bind(positions: tuple[int, ...], _width: int) -> RowMaker[T]:
        return cast("RowMaker[T]", itemgetter(*positions))

    return RowShape((name,), bind, queries, discarded=discarded)


def unread(*columns: str, queries: Sequence[str]) -> None:
    """Declare what statements return whose rows nobody reads (a lock taken, a notification sent)."""

    def bind(_positions: tuple[int, ...], _width: int) -> RowMaker[None]:
        return _nothing

    RowShape((), bind, queries, discarded=columns)


def built(build: Callable[..., T], *queries: str, discarded: Sequence[str] = ()) -> RowShape[T]:
    """Rows passed to ``build``: its parameters name the columns, in their order."""

    def bind(positions: tuple[int, ...], width: int) -> RowMaker[T]:
        if positions == tuple(range(width)):  # the query lists the columns in the builder's order
            return lambda values: build(*values)
        if len(positions) == 1:
            one = itemgetter(*positions)
            return lambda values: build(one(values))
        pick = itemgetter(*positions)
        return lambda values: build(*pick(values))

    return RowShape(tuple(inspect.signature(build).parameters), bind, queries, discarded=discarded)


# ------------------------------------------------------------------------------ Structs as rows
# A Struct is stored one column per field, a nested Struct's fields as `<field>_<subfield>`
# columns (retry_max_attempts), an optional nested Struct as NULLs when absent (last_run_*), enums
# by value, and unions of Structs (the action) or dicts (labels) as JSON.

_PLAIN = (UUID, str, int, float, bool, datetime, date, bytes)


def _as_json(kind: Any) -> bool:
    """Whether a field's type is marked to be stored as one JSON column (`models.STORED_AS_JSON`)."""
    if get_origin(kind) is not Annotated:
        return False
    metas = [mark for mark in get_args(kind)[1:] if isinstance(mark, msgspec.Meta)]
    return any((meta.extra or {}).get("column") == "json" for meta in metas)


def _bare(kind: Any) -> tuple[Any, bool]:
    """The type without its constraints and None, and whether None is allowed."""
    if get_origin(kind) is Annotated:
        return _bare(get_args(kind)[0])
    if isinstance(kind, UnionType):
        members = [member for member in get_args(kind) if member is not NoneType]
        if len(members) == 1:
            return _bare(members[0])[0], True
    return kind, False


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def _is_json(kind: Any) -> bool:
    if get_origin(kind) in (dict, list, tuple):
        return True
    return isinstance(kind, UnionType) and all(_is_struct(member) for member in get_args(kind))


def _column_decoder(kind: Any) -> Callable[[Any], Any] | None:
    """How a one-column field is read; None when as it is."""
    if kind in _PLAIN:
        return None
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {member.value: member for member in kind}.__getitem__
    if _is_json(kind):
        return msgspec.json.Decoder(kind).decode
    raise TypeError(f"no column mapping for {kind!r}")


class _BuilderSource:
    """The source of a builder taking a Struct's columns as parameters, and the names it uses."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.names: dict[str, Any] = {}

    def construct(self, cls: type[msgspec.Struct], prefix: str = "") -> str:
        """The expression making ``cls`` from its columns' parameters."""
        self.names[f"_{cls.__name__}"] = cls
        given: list[str] = []
        for field in msgspec.structs.fields(cls):
            kind, nullable = _bare(field.type)
            column = prefix + field.name
            json_column = _as_json(field.type)
            if _is_struct(kind) and not json_column:
                first = len(self.columns)
                value = self.construct(kind, column + "_")
                if nullable:
                    absent = " and ".join(f"{nested} is None" for nested in self.columns[first:])
                    value = f"None if {absent} else {value}"
            else:
                if not column.isidentifier() or iskeyword(column):
                    raise TypeError(f"column {column!r} cannot name a parameter")
                self.columns.append(column)
                value = column
                decode = msgspec.json.Decoder(kind).decode if json_column else _column_decoder(kind)
                if decode is not None:
                    self.names[f"_read_{column}"] = decode
                    value = f"_read_{column}({column})"
                    if nullable:
                        value = f"None if {column} is None else {value}"
            given.append(f"{field.name}={value}")
        return f"_{cls.__name__}({', '.join(given)})"


def _struct_builder(cls: type[T]) -> Callable[..., T]:
    """A builder whose parameters are the columns ``cls`` is stored in, made from its fields.

    Generated the way a dataclass's __init__ is, so that reading a row costs one call with the
    values in place, as a hand-written builder's would; a generic loop over the fields measured
    twice the cost per row, which job and run pages pay hundreds of times.
    """
    source = _BuilderSource()
    body = source.construct(cast("type[msgspec.Struct]", cls))
    namespace = dict(source.names)
    # The text is made of field names checked to be identifiers, and names bound just above.
    exec(f"def build({', '.join(source.columns)}):\n    return {body}\n", namespace)  # noqa: S102
    build: Callable[..., T] = namespace["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build


def struct(cls: type[T], *queries: str) -> RowShape[T]:
    """Rows read as ``cls``: its columns follow from its fields."""
    return built(_struct_builder(cls), *queries)


def _json_text(value: Any) -> str:
    return _json_encoder.encode(value).decode()


def _column_encoder(kind: Any) -> Callable[[Any], Any] | None:
    """How a one-column field is written; None when as it is."""
    if kind in _PLAIN:
        return None
    if isinstance(kind, type) and issubclass(kind, Enum):
        return attrgetter("value")
    if _is_json(kind):
        return lambda value: _json_encoder.encode(value).decode()
    raise TypeError(f"no column mapping for {kind!r}")


def _struct_writer(cls: type[msgspec.Struct], prefix: str = "") -> Callable[[Any, dict[str, Any]], None]:
    """What puts a Struct's values into statement parameters named like its columns."""
    steps: list[Callable[[Any, dict[str, Any]], None]] = []
    for field in msgspec.structs.fields(cls):
        kind, nullable = _bare(field.type)
        json_column = _as_json(field.type)
        if nullable and _is_struct(kind) and not json_column:  # last_run is the database's
            raise TypeError(f"{cls.__name__}.{field.name}: an optional nested Struct is not written")
        steps.append(_field_writer(field.name, prefix + field.name, kind, json_column=json_column))

    def write(value: Any, params: dict[str, Any]) -> None:
        for step in steps:
            step(value, params)

    return write


def _field_writer(
    name: str, column: str, kind: Any, *, json_column: bool = False
) -> Callable[[Any, dict[str, Any]], None]:
    get = attrgetter(name)
    if _is_struct(kind) and not json_column:
        nested = _struct_writer(kind, column + "_")
        return lambda value, params: nested(get(value), params)
    encode = _json_text if json_column else _column_encoder(kind)
    if encode is None:
        return lambda value, params: params.__setitem__(column, get(value))
    return lambda value, params: params.__setitem__(
        column, None if (field := get(value)) is None else encode(field)
    )


def struct_params(cls: type[T]) -> Callable[[T], dict[str, Any]]:
    """Statement parameters from a ``cls``, named like its columns (as `_struct` reads them)."""
    write = _struct_writer(cast("type[msgspec.Struct]", cls))

    def params(value: T) -> dict[str, Any]:
        found: dict[str, Any] = {}
        write(value, found)
        return found

    return params


async def fetch_all(
    conn: AsyncConn, shape: RowShape[T], query: str, params: Mapping[str, Any] | None = None
) -> list[T]:
    """Run the named ``query``; return its rows read as ``shape``."""
    async with conn.cursor(row_factory=shape.factory(query)) as cur:
        await cur.execute(q(query), params)
        return await cur.fetchall()


async def fetch_one(
    conn: AsyncConn, shape: RowShape[T], query: str, params: Mapping[str, Any] | None = None
) -> T | None:
    """Run the named ``query``; return its first row read as ``shape``, or None."""
    async with conn.cursor(row_factory=shape.factory(query)) as cur:
        await cur.execute(q(query), params)
        return await cur.fetchone()


async def execute(conn: AsyncConn, query: str, params: Mapping[str, Any] | None = None) -> None:
    """Run a statement whose rows, if any, nobody reads."""
    await conn.execute(q(query), params)
