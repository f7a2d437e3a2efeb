"""``db.columns``: cqlengine's column types, plus :class:`Vector`.

Any column takes ``index="sai"`` for a storage-attached index (see
:mod:`flask_cqlalchemy.sai`). The scalar, tuple and user-defined type
columns here are subclasses of cqlengine's own (an instance is still a
``cassandra.cqlengine.columns.Text`` and so on) that also take
``index_options={...}``. ``Set``, ``List``, ``Map`` and ``Counter`` are
cqlengine's own classes: cqlengine builds their updates by their exact class
(``SET s = s + ...``, ``n = n + 1``), so they take ``index="sai"`` but
not ``index_options`` yet (Cassandra 5.0 does accept ``case_sensitive``,
``normalize`` and ``ascii`` on an index of text elements or map values;
this extension does not declare them). Every other name of ``cassandra.cqlengine.columns`` is
this module's too, so code written against it keeps working.
"""

from __future__ import annotations

from typing import Any

from cassandra.cqlengine import columns as _cqlengine
from cassandra.cqlengine.columns import (
    BaseCollectionColumn,
    BaseContainerColumn,
    BaseFloat,
    BaseValueManager,
    Column,
    Counter,
    List,
    Map,
    Set,
    ValidationError,
)

from .sai import SAIColumn
from .vector import Vector


class Blob(SAIColumn, _cqlengine.Blob):  # type: ignore[misc]
    __doc__ = _cqlengine.Blob.__doc__


class Inet(SAIColumn, _cqlengine.Inet):  # type: ignore[misc]
    __doc__ = _cqlengine.Inet.__doc__


class Text(SAIColumn, _cqlengine.Text):  # type: ignore[misc]
    __doc__ = _cqlengine.Text.__doc__


class Ascii(SAIColumn, _cqlengine.Ascii):  # type: ignore[misc]
    __doc__ = _cqlengine.Ascii.__doc__


class Integer(SAIColumn, _cqlengine.Integer):  # type: ignore[misc]
    __doc__ = _cqlengine.Integer.__doc__


class TinyInt(SAIColumn, _cqlengine.TinyInt):  # type: ignore[misc]
    __doc__ = _cqlengine.TinyInt.__doc__


class SmallInt(SAIColumn, _cqlengine.SmallInt):  # type: ignore[misc]
    __doc__ = _cqlengine.SmallInt.__doc__


class BigInt(SAIColumn, _cqlengine.BigInt):  # type: ignore[misc]
    __doc__ = _cqlengine.BigInt.__doc__


class VarInt(SAIColumn, _cqlengine.VarInt):  # type: ignore[misc]
    __doc__ = _cqlengine.VarInt.__doc__


class DateTime(SAIColumn, _cqlengine.DateTime):  # type: ignore[misc]
    __doc__ = _cqlengine.DateTime.__doc__


class Date(SAIColumn, _cqlengine.Date):  # type: ignore[misc]
    __doc__ = _cqlengine.Date.__doc__


class Time(SAIColumn, _cqlengine.Time):  # type: ignore[misc]
    __doc__ = _cqlengine.Time.__doc__


class Duration(SAIColumn, _cqlengine.Duration):  # type: ignore[misc]
    __doc__ = _cqlengine.Duration.__doc__


class UUID(SAIColumn, _cqlengine.UUID):  # type: ignore[misc]
    __doc__ = _cqlengine.UUID.__doc__


class TimeUUID(SAIColumn, _cqlengine.TimeUUID):  # type: ignore[misc]
    __doc__ = _cqlengine.TimeUUID.__doc__


class Boolean(SAIColumn, _cqlengine.Boolean):  # type: ignore[misc]
    __doc__ = _cqlengine.Boolean.__doc__


class Float(SAIColumn, _cqlengine.Float):  # type: ignore[misc]
    __doc__ = _cqlengine.Float.__doc__


class Double(SAIColumn, _cqlengine.Double):  # type: ignore[misc]
    __doc__ = _cqlengine.Double.__doc__


class Decimal(SAIColumn, _cqlengine.Decimal):  # type: ignore[misc]
    __doc__ = _cqlengine.Decimal.__doc__


class Tuple(SAIColumn, _cqlengine.Tuple):  # type: ignore[misc]
    __doc__ = _cqlengine.Tuple.__doc__


class UserDefinedType(SAIColumn, _cqlengine.UserDefinedType):  # type: ignore[misc]
    __doc__ = _cqlengine.UserDefinedType.__doc__


Bytes = Blob


def __getattr__(name: str) -> Any:
    # Everything else cqlengine's module has (value managers, helpers).
    return getattr(_cqlengine, name)


__all__ = [
    "BaseCollectionColumn",
    "BaseContainerColumn",
    "BaseFloat",
    "BaseValueManager",
    "Bytes",
    "Column",
    "ValidationError",
    "Vector",
    "Blob",
    "Inet",
    "Text",
    "Ascii",
    "Integer",
    "TinyInt",
    "SmallInt",
    "BigInt",
    "VarInt",
    "Counter",
    "DateTime",
    "Date",
    "Time",
    "Duration",
    "UUID",
    "TimeUUID",
    "Boolean",
    "Float",
    "Double",
    "Decimal",
    "Tuple",
    "Set",
    "List",
    "Map",
    "UserDefinedType",
]
