"""JSON for models, pages and Cassandra's value types (``CASSANDRA_JSON_PROVIDER``).

Two layers. :func:`columns_dict` (``Model.to_dict``, ``UserType.to_dict``)
turns an instance into a dict of its columns, nested user-defined types
and collections into dicts and lists; with ``mode="json"`` the values
themselves become JSON types too. The provider that
:func:`install` gives an app calls that for every model, user-defined type
and :class:`~flask_cqlalchemy.Page` ``jsonify`` meets, and converts
Cassandra's value types wherever they appear (a UUID in a hand-built dict).

Values in JSON (``mode="json"`` and the provider):

* UUID and TimeUUID: their canonical string.
* Timestamps (``datetime``): ISO 8601 in UTC with a ``Z``, rounded to the
  nearest millisecond (Cassandra's precision; the driver reads timestamps
  far from 1970 with float noise); a naive datetime is taken as UTC, which
  is how cqlengine reads them.
* Dates (``datetime.date``, the driver's ``Date``): ``YYYY-MM-DD``; a
  ``Date`` outside years 0-9999 gets a signed, expanded year
  (``+10000-01-01``, ``-0001-12-31``), as ISO 8601 allows.
* Times (``datetime.time``, the driver's ``Time``): ``HH:MM:SS.fff``, with
  three more digits for each non-zero group of micro- and nanoseconds.
* Durations (the driver's ``Duration``): ISO 8601, ``P1Y2M3DT4H5M6.5S``,
  ``-P1D`` for a negative one, ``PT0S`` for zero.
* Decimal: its string, ``str(value)`` (no precision lost to a float; it may
  be in exponent form, ``"1E+2"``). Varint: a number.
* Floats: numbers; NaN and infinities, which JSON cannot write, ``null``
  (in ``mode="json"`` and anywhere the provider writes them).
* Blobs (``bytes``): standard base64, padded.
* Inet: the address as a string.
* Sets (``set``, the driver's ``SortedSet``): lists in ascending order of the
  values (of their JSON text when the values do not compare, e.g. tuples
  holding nulls), so equal sets give equal JSON.
* Lists, tuples and vectors: lists. Maps: objects whose keys are strings,
  a non-string key turned into its JSON text (``{"1": ..}``, ``{"[1,\\"a\\"]": ..}``
  for a tuple key).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import functools
import ipaddress
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from cassandra.cqlengine.models import BaseModel
from cassandra.cqlengine.usertype import BaseUserType
from cassandra.util import Date, Duration, SortedSet, Time
from flask.json.provider import DefaultJSONProvider, JSONProvider

from .errors import ConfigError
from .pagination import Page

Mode = Literal["python", "json"]

_NATIVE = (str, int, float, bool, type(None))
_NANOS_PER_SECOND = 1_000_000_000
#: What a value the converters do not know becomes: the caller decides.
_UNKNOWN: Any = object()
#: How ``json`` refuses a NaN or an infinity when ``allow_nan`` is false.
_OUT_OF_RANGE = "Out of range float values are not JSON compliant"


def columns_dict(
    instance: Any,
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    mode: Mode = "python",
) -> dict[str, Any]:
    """The values of a model or user-defined type instance, by column
    (attribute) name, in the order of the columns.

    ``only`` keeps these columns, ``exclude`` leaves these out (both may be
    given). User-defined types become dicts, sets sorted lists, lists,
    tuples and vectors lists, maps dicts. ``mode="python"`` keeps the
    values as Python has them (``UUID``, ``datetime``, ``Decimal``,
    ``bytes``, the driver's ``Date``/``Time``/``Duration``); ``mode="json"``
    turns them into the JSON values the app's provider writes (strings,
    numbers; see the module's documentation).

    A model instance built from a row that did not hold every column (a
    query with ``only()`` or ``defer()``, a polymorphic child read through its
    base) has only the columns read, and those given a value since: the
    others hold what cqlengine filled in (a default, None), not the row's.

    Raises ``ValueError`` naming a name of ``only`` or ``exclude`` that is
    not a column, a name of ``only`` that the row's query did not read, or
    an unknown ``mode``; ``TypeError`` if ``only`` or ``exclude`` is a
    string rather than a list of names.
    """
    json_mode = _check_mode(mode)
    fields = _fields_of(instance)
    names = _selected(instance, fields, only, exclude, _unread(instance))
    return {name: _convert(getattr(instance, name), json_mode) for name in names}


class CassandraJSONProvider(DefaultJSONProvider):
    """Flask's (and Quart's) ``DefaultJSONProvider`` that also writes models,
    user-defined types, :class:`~flask_cqlalchemy.Page` and Cassandra's value
    types (see :mod:`flask_cqlalchemy.json_provider` for the forms).

    A model is written as its ``to_dict(mode="json")``, so a model that
    overrides ``to_dict`` (say, to leave a column out) is written that way.
    A page is ``{"items", "next_cursor", "has_next", "per_page"}``.

    Everything else goes to the ``default`` of the next class in line: Flask's,
    or that of the app's own provider class this one was combined with by
    :func:`install`.

    .. versionadded:: 0.1
    """

    def default(self, o: Any) -> Any:  # type: ignore[override]
        converted = _json_default(o)
        if converted is not _UNKNOWN:
            return converted
        return super().default(o)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``DefaultJSONProvider.dumps``, with NaN and infinities written as
        ``null`` (``json`` would write ``NaN``, which is not JSON). Data without
        them is written in one pass; ``allow_nan=...`` given is honoured."""
        if "allow_nan" in kwargs:
            return super().dumps(obj, **kwargs)  # type: ignore[no-any-return]
        try:
            return super().dumps(obj, allow_nan=False, **kwargs)  # type: ignore[no-any-return]
        except ValueError as error:
            if not str(error).startswith(_OUT_OF_RANGE):
                raise
        default = kwargs.pop("default", self.default)
        return super().dumps(  # type: ignore[no-any-return]
            _finite(obj), default=lambda o: _finite(default(o)), allow_nan=False, **kwargs
        )


class _ConvertingFirst(JSONProvider):
    """For an app provider that is not a ``DefaultJSONProvider`` (another JSON
    library, no ``default`` hook to extend): models, pages and Cassandra's
    values are converted before that provider's ``dumps`` sees the data."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return super().dumps(_converted_tree(obj), **kwargs)


def install(app: Any) -> None:
    """Make ``app.json`` (a Flask or Quart app's) write models, pages and
    Cassandra's value types. Called by ``init_app`` unless
    ``CASSANDRA_JSON_PROVIDER`` is false.

    The app's provider is kept and extended, with its settings and its own
    conversions: Flask's ``DefaultJSONProvider`` or a subclass of it gets
    :class:`CassandraJSONProvider`'s ``default`` in front of its own (which
    still handles every type this module does not); another ``JSONProvider``
    gets its data converted before its ``dumps``. A provider that already is
    a :class:`CassandraJSONProvider` keeps its class. A ``default`` function
    set on the provider instance (``app.json.default = fn``), which would
    shadow the class's, gets the Cassandra conversions run before it.

    Raises :class:`~flask_cqlalchemy.ConfigError` naming
    ``CASSANDRA_JSON_PROVIDER`` if ``app.json`` is not a ``JSONProvider``.

    .. versionadded:: 0.1
    """
    provider = app.json
    if isinstance(provider, _ConvertingFirst):
        return
    if not isinstance(provider, JSONProvider):
        raise ConfigError(
            "CASSANDRA_JSON_PROVIDER",
            f"app.json is a {type(provider).__name__}, not a flask.json.provider.JSONProvider: set "
            "CASSANDRA_JSON_PROVIDER = False, or make the app's provider a subclass of CassandraJSONProvider",
        )
    # The instance itself changes class rather than being replaced: it keeps
    # what was set on it (app.json.sort_keys = False, ...) and what its own
    # constructor was given.
    if not isinstance(provider, CassandraJSONProvider):
        provider.__class__ = _extended(type(provider))
    # A default function set on the instance (app.json.default = fn, public
    # in Flask) would shadow the class's: it gets ours in front of it.
    own_default = getattr(provider, "__dict__", {}).get("default")
    if own_default is not None and not getattr(own_default, "_cqlalchemy_wrapped", False):
        provider.default = _converting_first(own_default)  # type: ignore[attr-defined]


def _converting_first(own_default: Any) -> Any:
    """``own_default`` with this module's conversions run before it."""

    @functools.wraps(own_default)
    def default(o: Any) -> Any:
        converted = _json_default(o)
        if converted is not _UNKNOWN:
            return converted
        return own_default(o)

    default._cqlalchemy_wrapped = True  # type: ignore[attr-defined]
    return default


#: Provider classes extended by install(), by the app's provider class.
_EXTENDED: dict[type, type] = {DefaultJSONProvider: CassandraJSONProvider}


def _extended(provider_class: type) -> type:
    """``provider_class`` with this module's conversions in front of its own."""
    extended = _EXTENDED.get(provider_class)
    if extended is None:
        front = CassandraJSONProvider if issubclass(provider_class, DefaultJSONProvider) else _ConvertingFirst
        extended = type(provider_class.__name__, (front, provider_class), {"__module__": provider_class.__module__})
        _EXTENDED[provider_class] = extended
    return extended


# -- instances ----------------------------------------------------------------


def _check_mode(mode: str) -> bool:
    if mode not in ("python", "json"):
        raise ValueError(f"mode must be 'python' or 'json', not {mode!r}")
    return mode == "json"


def _fields_of(instance: Any) -> Mapping[str, Any]:
    if isinstance(instance, BaseModel):
        return instance._columns  # type: ignore[no-any-return]
    if isinstance(instance, BaseUserType):
        return instance._fields  # type: ignore[no-any-return]
    raise TypeError(f"expected a model or user-defined type instance, not {type(instance).__name__}")


def _unread(instance: Any) -> set[str]:
    """The columns of a model instance that its row did not hold and that
    were not given a value since (the model's ``_construct_instance``
    records what it filled in for them)."""
    filled = getattr(instance, "_cqlalchemy_unread", None) if isinstance(instance, BaseModel) else None
    if not filled:
        return set()
    managers = instance._values
    # Compared by value: save() and update() validate every column, which
    # gives a collection a new (equal) object.
    return {name for name, value in filled.items() if _same(managers[name].value, value) and not managers[name].changed}


def _same(value: Any, filled: Any) -> bool:
    try:
        return value is filled or bool(value == filled)
    except Exception:  # noqa: BLE001 - a value that does not compare is not the one filled in
        return False


def _names(argument: str, names: Iterable[str] | None) -> list[str] | None:
    """``only`` or ``exclude`` as a list (an iterator is read once), refusing a string."""
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError(f"to_dict({argument}=...) takes a list of column names, not the string {names!r}")
    return list(names)


def _selected(
    instance: Any,
    fields: Mapping[str, Any],
    only: Iterable[str] | None,
    exclude: Iterable[str] | None,
    unread: set[str],
) -> list[str]:
    """The names of ``fields`` that ``only`` and ``exclude`` keep, and that were read."""
    chosen: dict[str, set[str]] = {}
    for argument, given in (("only", only), ("exclude", exclude)):
        names = _names(argument, given)
        if names is None:
            continue
        chosen[argument] = set(names)
        for name in names:
            if name not in fields:
                kind = "column" if isinstance(instance, BaseModel) else "field"
                raise ValueError(
                    f"{type(instance).__name__} has no {kind} {name!r} (in to_dict's {argument}); "
                    f"its {kind}s are {', '.join(fields)}"
                )
            if argument == "only" and name in unread:
                raise ValueError(
                    f"{type(instance).__name__}'s column {name!r} was not read by the query this row came from "
                    "(only(), defer(), or a polymorphic base, which reads its own columns): its value is not "
                    f"the row's. Its read columns are {', '.join(n for n in fields if n not in unread)}"
                )
    keep = chosen.get("only")
    leave = chosen.get("exclude", set())
    return [name for name in fields if (keep is None or name in keep) and name not in leave and name not in unread]


def page_dict(
    page: Page[Any],
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    mode: Mode = "python",
) -> dict[str, Any]:
    """:meth:`Page.to_dict <flask_cqlalchemy.Page.to_dict>`."""
    json_mode = _check_mode(mode)
    # Only what was given is passed on: a model's own to_dict may have its
    # own defaults for the others. An iterator of names is read once, for
    # every item.
    only, exclude = _names("only", only), _names("exclude", exclude)
    options: dict[str, Any] = {"mode": mode}
    if only is not None:
        options["only"] = only
    if exclude is not None:
        options["exclude"] = exclude
    items = []
    for item in page.items:
        if isinstance(item, (BaseModel, BaseUserType)):
            to_dict = getattr(item, "to_dict", None) or functools.partial(columns_dict, item)
            items.append(to_dict(**options))
        elif only is None and exclude is None:
            items.append(_convert(item, json_mode))
        else:
            raise TypeError(f"only and exclude select columns of models; this page holds {type(item).__name__}s")
    return {"items": items, "next_cursor": page.next_cursor, "has_next": page.has_next, "per_page": page.per_page}


def _instance_dict(instance: Any, json_mode: bool) -> dict[str, Any]:
    """A model's or user-defined type's own ``to_dict`` when it has one (it may
    override it), else :func:`columns_dict`."""
    mode: Mode = "json" if json_mode else "python"
    to_dict = getattr(instance, "to_dict", None)
    if callable(to_dict):
        return to_dict(mode=mode)  # type: ignore[no-any-return]
    return columns_dict(instance, mode=mode)


# -- values -------------------------------------------------------------------


def _convert(value: Any, json_mode: bool) -> Any:
    """A column's value with its structure made of dicts and lists, and, in
    JSON mode, every value a JSON one (NaN and infinities null)."""
    if isinstance(value, _NATIVE):
        if json_mode and type(value) is float and not math.isfinite(value):
            return None
        return value
    if isinstance(value, (BaseModel, BaseUserType)):
        return _instance_dict(value, json_mode)
    if isinstance(value, Page):
        return page_dict(value, mode="json" if json_mode else "python")
    if isinstance(value, (set, frozenset, SortedSet)):
        return [_convert(item, json_mode) for item in _sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_convert(item, json_mode) for item in value]
    if isinstance(value, Mapping):
        if json_mode:
            return {_json_key(key): _convert(item, True) for key, item in value.items()}
        return {key: _convert(item, False) for key, item in value.items()}
    if json_mode:
        scalar = _json_scalar(value)
        if scalar is _UNKNOWN:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        return scalar
    return value


def _json_default(value: Any) -> Any:
    """What the provider's ``default`` writes for ``value``, or ``_UNKNOWN``.
    Only called for what ``json`` does not write itself (so not for dicts,
    lists, tuples)."""
    if isinstance(value, (BaseModel, BaseUserType)):
        return _instance_dict(value, json_mode=True)
    if isinstance(value, Page):
        return page_dict(value, mode="json")
    if isinstance(value, (set, frozenset, SortedSet, Mapping)):
        return _convert(value, json_mode=True)
    return _json_scalar(value)


def _converted_tree(value: Any) -> Any:
    """``value`` with the models, pages and Cassandra values inside its dicts
    and lists converted; what this module does not know is left for the app's
    own provider."""
    if isinstance(value, _NATIVE):
        return _finite(value)
    if isinstance(value, dict):
        return {key: _converted_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_converted_tree(item) for item in value]
    converted = _json_default(value)
    return value if converted is _UNKNOWN else converted


def _finite(value: Any) -> Any:
    """``value`` with the NaN and infinite floats in its dicts, lists and
    tuples made ``None``; anything else as it is."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_scalar(value: Any) -> Any:
    """A Cassandra scalar (or Python's own) as a JSON value, or ``_UNKNOWN``."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date
        return _timestamp(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Date):
        return _date_from_days(value.days_from_epoch)
    if isinstance(value, datetime.time):
        return value.isoformat(timespec="milliseconds" if value.microsecond % 1000 == 0 else "microseconds")
    if isinstance(value, Time):
        return _time_of_day(value.nanosecond_time)
    if isinstance(value, Duration):
        return _duration(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    return _UNKNOWN


def _json_key(key: Any) -> str:
    """A map key as a JSON object key: a string as it is, anything else its JSON text."""
    if isinstance(key, str):
        return key
    converted = _convert(key, json_mode=True)
    if isinstance(converted, str):
        return converted
    return json.dumps(converted, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _sorted(values: Iterable[Any]) -> list[Any]:
    """A set's values in a deterministic order: their own, else their JSON text's."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:  # e.g. tuples holding a null
        return sorted(items, key=lambda item: json.dumps(_convert(item, json_mode=True), sort_keys=True))


def _timestamp(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC, rounded to the nearest millisecond: Cassandra keeps
    milliseconds, and the driver reads a timestamp far from 1970 through a
    float (``...59.999`` stored, ``...59.998993`` read)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    millis = (moment.microsecond + 500) // 1000
    if millis < 1000:
        moment = moment.replace(microsecond=millis * 1000)
    else:  # up into the next second (minute, day, year)
        try:
            moment = moment.replace(microsecond=0) + datetime.timedelta(seconds=1)
        except OverflowError:  # datetime.max: its millisecond, as the driver stores it
            moment = moment.replace(microsecond=999_000)
    return moment.isoformat(timespec="milliseconds") + "Z"


def _time_of_day(nanoseconds: int) -> str:
    seconds, nanos = divmod(nanoseconds, _NANOS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    digits = 3 if nanos % 1_000_000 == 0 else 6 if nanos % 1000 == 0 else 9
    return f"{hour:02d}:{minute:02d}:{second:02d}.{f'{nanos:09d}'[:digits]}"


def _date_from_days(days: int) -> str:
    """ISO 8601 date of ``days`` since 1970-01-01 in the proleptic Gregorian
    calendar; years outside 0-9999 (Cassandra's dates span millions of years)
    expanded with a sign."""
    # Civil-from-days over 400-year eras (H. Hinnant's algorithm).
    shifted = days + 719468
    era = shifted // 146097
    day_of_era = shifted - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (month <= 2)
    if 0 <= year <= 9999:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{'-' if year < 0 else '+'}{abs(year):04d}-{month:02d}-{day:02d}"


def _duration(value: Duration) -> str:
    """ISO 8601 duration; Cassandra's three parts (months, days, nanoseconds)
    all have the same sign."""
    months, days, nanos = value.months, value.days, value.nanoseconds
    sign = "-" if min(months, days, nanos) < 0 else ""
    months, days, nanos = abs(months), abs(days), abs(nanos)
    years, months = divmod(months, 12)
    seconds, fraction = divmod(nanos, _NANOS_PER_SECOND)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    date_part = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time_part = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or fraction:
        time_part += f"{seconds}.{fraction:09d}".rstrip("0").rstrip(".") + "S"
    if not date_part and not time_part:
        return "PT0S"
    return f"{sign}P{date_part}" + (f"T{time_part}" if time_part else "")


__all__ = ["CassandraJSONProvider", "columns_dict", "install", "page_dict"]
