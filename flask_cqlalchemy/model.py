"""``db.Model`` and ``db.UserType``: per-extension abstract bases.

Each :class:`~flask_cqlalchemy.CQLAlchemy` gets its own abstract base, so
``sync_db`` knows exactly this extension's models, and each model asks its
extension, at query time, for the connection and keyspace of the current
app (which is what makes the app-factory pattern and ``set_keyspace`` work).
"""

from __future__ import annotations

import datetime
import decimal
import uuid
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cassandra.cqlengine import models, usertype
from cassandra.cqlengine.columns import BaseContainerColumn, BaseValueManager
from cassandra.cqlengine.models import hybrid_classmethod
from cassandra.cqlengine.query import ValidationError

from . import compiled, execution, sai
from .json_provider import Mode, columns_dict
from .query import QuerySet, first_rows, first_rows_sync, one_of, send_captured, send_captured_sync
from .vector import Vector

if TYPE_CHECKING:
    from .extension import CQLAlchemy


#: Values whose deep copy is an equal value: no need to copy them.
_IMMUTABLE_VALUES = frozenset(
    {type(None), bool, int, float, str, bytes, uuid.UUID, decimal.Decimal, datetime.datetime, datetime.date}
)


class _InstanceState:
    """What cqlengine's ``save``/``update`` change on an instance once the
    statements are built. The async path builds first and sends after, so a
    send that fails puts this back, as if the blocking call had raised."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._persisted = instance._is_persisted
        self._timestamp = instance._timestamp
        self._values = [(vm, vm.previous_value, vm.explicit) for vm in instance._values.values()]

    def restore(self) -> None:
        self._instance._is_persisted = self._persisted
        self._instance._timestamp = self._timestamp
        for vm, previous, explicit in self._values:
            vm.previous_value = previous
            vm.explicit = explicit


class ModelMixin:
    """Methods every ``db.Model`` gains on top of cqlengine's ``Model``."""

    __cqlalchemy__: CQLAlchemy
    __queryset__ = QuerySet
    #: Name of a ``CASSANDRA_BINDS`` entry: this model's cluster and keyspace.
    __bind__: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs as cqlengine's metaclass creates the class, its columns known:
        # SAI index options are checked at declaration, naming the column.
        super().__init_subclass__(**kwargs)
        sai.adopt_declared(cls)

    def __init__(self, **values: Any) -> None:
        # cqlengine's, except that a column's default is only evaluated when
        # the column has no value given (cqlengine calls every default, a
        # uuid4() included, then throws the result away for given values).
        _fill(self, values, persisted=False)

    def __getstate__(self) -> dict[str, Any]:
        # Pickle and copy.deepcopy: each value manager without its weak proxy
        # of this instance (which would copy as a second, half-built instance).
        state = self.__dict__.copy()
        state["_values"] = {
            name: (type(manager), {k: v for k, v in manager.__dict__.items() if k != "instance"})
            for name, manager in self._values.items()  # type: ignore[attr-defined]
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        managers = state.pop("_values")
        self.__dict__.update(state)
        owner = weakref.proxy(self)
        self._values = {}
        for name, (kind, attributes) in managers.items():
            manager = kind.__new__(kind)
            manager.__dict__.update(attributes)
            manager.instance = owner
            self._values[name] = manager

    @classmethod
    def _get_keyspace(cls) -> str | None:
        if cls.__keyspace__:  # type: ignore[attr-defined]
            return cls.__keyspace__  # type: ignore[attr-defined,no-any-return]
        state = cls.__cqlalchemy__.initialized_state()
        # None before init_app: cqlengine asks while creating a model class
        # (to register its user-defined types), which may precede init_app in
        # an app factory. Queries still fail clearly, see column_family_name.
        return None if state is None else state.bind(cls.__bind__).keyspace

    @classmethod
    def column_family_name(cls, include_keyspace: bool = True) -> str:
        if include_keyspace and not cls.__keyspace__:  # type: ignore[attr-defined]
            cls.__cqlalchemy__.state()  # NotInitializedError before init_app
        return super().column_family_name(include_keyspace)  # type: ignore[misc,no-any-return]

    @classmethod
    def _class_get_connection(cls) -> str:
        return cls.__connection__ or cls.__cqlalchemy__.state().bind(cls.__bind__).connection_name  # type: ignore[attr-defined]

    def _inst_get_connection(self) -> str:
        # cqlengine's order: the instance's using(connection=...), then a
        # __connection__ set on the instance or its class, then the app's.
        return (
            self._connection  # type: ignore[attr-defined]
            or self.__connection__  # type: ignore[attr-defined]
            or self.__cqlalchemy__.state().bind(self.__bind__).connection_name
        )

    _get_connection = hybrid_classmethod(_class_get_connection, _inst_get_connection)

    @classmethod
    def _is_context_clone(cls) -> bool:
        """True for the throw-away subclasses cqlengine makes in ``ContextQuery``
        and ``using(keyspace=...)`` (``sync_table`` makes one per call)."""
        return cls.__module__ == models.__name__

    @classmethod
    def _discover_polymorphic_submodels(cls) -> None:
        # cqlengine walks every subclass, and so registers its own clones of
        # a child model (left behind by sync_table) in place of the child.
        if not cls._is_polymorphic_base:  # type: ignore[attr-defined]
            raise models.ModelException(
                "_discover_polymorphic_submodels can only be called on polymorphic base classes"
            )
        pending: list[Any] = list(cls.__subclasses__())
        while pending:
            klass = pending.pop()
            pending.extend(klass.__subclasses__())
            if klass._is_context_clone() or klass.__discriminator_value__ is None:
                continue
            cls._discriminator_map[klass.__discriminator_value__] = klass  # type: ignore[attr-defined]

    def _set_persisted(self, force: bool = False) -> None:
        # cqlengine's: it asks each value whether it changed before looking
        # at force, and deep-copies each value as "previous", even immutable
        # ones. Same outcome, without the wasted work.
        for manager in self._values.values():  # type: ignore[attr-defined]
            if force or manager.changed:
                _keep_as_previous(manager)
                manager.explicit = False
        self._is_persisted = True

    #: For an instance built from a row that did not hold every column
    #: (``only()``, ``defer()``, a polymorphic child read through its base):
    #: each column the row lacked, with the value cqlengine filled in for it
    #: (a default, None, an empty collection). ``to_dict`` leaves these out
    #: until the value is replaced or changed. None (the class's): all read.
    _cqlalchemy_unread: dict[str, Any] | None = None

    @classmethod
    def _construct_instance(cls, values: dict[str, Any]) -> Any:
        # cqlengine's, for every row read: Model(**row), then
        # _set_persisted(force=True). The same instance, built in one pass;
        # polymorphic models and models with their own __init__ go
        # cqlengine's way.
        if cls._is_polymorphic or cls.__init__ is not ModelMixin.__init__:  # type: ignore[attr-defined,misc]
            instance = super()._construct_instance(values)  # type: ignore[misc]
            db_map = cls._db_map  # type: ignore[attr-defined]
            read: Any = {db_map.get(k, k) for k in values} if db_map else values.keys()
        else:
            if cls._db_map:  # type: ignore[attr-defined]
                values = {cls._db_map.get(k, k): v for k, v in values.items()}  # type: ignore[attr-defined]
            instance = cls.__new__(cls)
            _fill(instance, values, persisted=True)
            read = values.keys()
        # A polymorphic base picks the child class: its columns are the ones
        # that count. Nothing is recorded for a row that holds them all.
        if not instance._columns.keys() <= read:
            instance._cqlalchemy_unread = {
                name: manager.value for name, manager in instance._values.items() if name not in read
            }
        return instance

    # -- sync -------------------------------------------------------------

    @classmethod
    def get(cls, *args: Any, **kwargs: Any) -> Any:
        """cqlengine's ``Model.get``; by keyword filters, through a compiled plan
        once one is known (:mod:`flask_cqlalchemy.compiled`)."""
        if args or not kwargs or not _plans_apply(cls) or execution.capturing():
            return super().get(*args, **kwargs)  # type: ignore[misc]
        name = cls._class_get_connection()
        ready = compiled.read_statement(cls, name, kwargs)
        if ready is not None:
            statement, deferred = ready
            return one_of(cls, first_rows_sync(statement, 2), deferred, kwargs)
        queryset = cls.objects.filter(**kwargs)  # type: ignore[attr-defined]
        statement = queryset._capture_select()
        compiled.learn_read(cls, name, kwargs, lambda: statement)
        return one_of(cls, first_rows_sync(statement, 2), queryset._deferred_values, kwargs)

    @classmethod
    def create(cls, **values: Any) -> Any:
        """cqlengine's ``Model.create``, through a compiled plan once one is known."""
        if not _plans_apply(cls) or execution.capturing():
            return super().create(**values)  # type: ignore[misc]
        instance = _created(cls, values)
        name = cls._class_get_connection()
        statement = compiled.insert_statement(cls, name, instance)
        if statement is not None:
            execution.send_sync(statement)
            return instance
        _, statements = send_captured_sync(instance.save)
        compiled.learn_insert(cls, name, instance, statements)
        return instance

    def to_dict(
        self,
        *,
        only: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        mode: Mode = "python",
    ) -> dict[str, Any]:
        """This row's values by column (attribute) name, in the order of the
        columns; what ``jsonify(instance)`` writes, with ``mode="json"``.

        ``only`` keeps these columns, ``exclude`` leaves these out. User-defined
        types become dicts, sets sorted lists, lists, tuples and vectors
        lists, maps dicts. ``mode="python"`` keeps the values as Python has
        them (``UUID``, ``datetime``, ``Decimal``, ``bytes``...); ``mode="json"``
        makes them JSON values (strings for UUIDs, ISO 8601 timestamps,
        base64 blobs...; docs/json.md has the table).

        Override it to change what ``jsonify`` writes for a model (say, to
        leave a column out by default): the JSON provider and
        :meth:`Page.to_dict <flask_cqlalchemy.Page.to_dict>` call it.

        Raises ``ValueError`` naming a name of ``only`` or ``exclude`` that is
        not a column, ``TypeError`` if either is a string instead of a list.

        .. versionadded:: 0.1
        """
        return columns_dict(self, only=only, exclude=exclude, mode=mode)

    @classmethod
    def get_or_404(cls, *args: Any, description: str | None = None, **kwargs: Any) -> Any:
        """``Model.get`` that raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        return cls.objects.get_or_404(*args, description=description, **kwargs)  # type: ignore[attr-defined]

    # -- async --------------------------------------------------------------

    @classmethod
    async def acreate(cls, **values: Any) -> Any:
        """Validate and insert a new row; await and return the instance.

        Validation errors are raised before anything is sent.
        """
        name = cls._class_get_connection()
        if not _plans_apply(cls):
            instance, _ = await send_captured(name, lambda: _CQLENGINE_CREATE(cls, **values))
            return instance
        instance = _created(cls, values)
        statement = compiled.insert_statement(cls, name, instance)
        if statement is not None:
            await execution.send(statement)
            return instance
        _, statements = await send_captured(name, instance.save)
        compiled.learn_insert(cls, name, instance, statements)
        return instance

    @classmethod
    async def aget(cls, *args: Any, **kwargs: Any) -> Any:
        """Await the single row matching the filters (``Model.get``)."""
        if kwargs and not args and _plans_apply(cls):
            name = cls._class_get_connection()
            ready = compiled.read_statement(cls, name, kwargs)
            if ready is not None:
                statement, deferred = ready
                result = await execution.send(statement)
                rows = result.current_rows
                if len(rows) < 2 and result.paging_state:  # an empty first page: rare
                    rows = rows + await first_rows(statement, 2 - len(rows), result.paging_state)
                return one_of(cls, rows, deferred, kwargs)
            if execution.needs_connect(name):
                await execution.ensure_connected(name)
            queryset = cls.objects.filter(**kwargs)  # type: ignore[attr-defined]
            statement = queryset._capture_select()
            compiled.learn_read(cls, name, kwargs, lambda: statement)
            return one_of(cls, await first_rows(statement, 2), queryset._deferred_values, kwargs)
        return await cls.objects.aget(*args, **kwargs)  # type: ignore[attr-defined]

    @classmethod
    async def aget_or_404(cls, *args: Any, description: str | None = None, **kwargs: Any) -> Any:
        """:meth:`aget` that raises :class:`~flask_cqlalchemy.RowNotFound` (404) when no row matches."""
        return await cls.objects.aget_or_404(*args, description=description, **kwargs)  # type: ignore[attr-defined]

    async def asave(self) -> Any:
        """Await ``save()``: insert or update this instance."""
        return await self._send_changes(self.save)  # type: ignore[attr-defined]

    async def aupdate(self, **values: Any) -> Any:
        """Await ``update(**values)`` of this instance."""
        return await self._send_changes(lambda: self.update(**values))  # type: ignore[attr-defined]

    async def adelete(self) -> None:
        """Await ``delete()`` of this instance."""
        await send_captured(self._inst_get_connection(), self.delete)  # type: ignore[attr-defined]

    async def _send_changes(self, build: Any) -> Any:
        state = _InstanceState(self)
        try:
            await send_captured(self._inst_get_connection(), build)
        except BaseException:
            state.restore()
            raise
        return self


_CQLENGINE_CREATE = models.BaseModel.create.__func__  # type: ignore[attr-defined]


def _plans_apply(model: Any) -> bool:
    """Whether ``get``/``create`` may take compiled plans: a concrete model
    whose queryset is this extension's own (an overridden ``filter``, ``get``
    or ``create`` must run as cqlengine would run it)."""
    return model.__queryset__ is QuerySet and not model.__abstract__


def _fill(instance: Any, values: dict[str, Any], persisted: bool) -> None:
    """Set up a new instance: cqlengine's ``Model.__init__`` and, for a row
    read (``persisted``), ``_set_persisted(force=True)``."""
    # Attribute by attribute, as cqlengine does: touching instance.__dict__
    # would make CPython build a separate dict object for every instance
    # (measured: a full garbage collection during every 10,000-row scan).
    instance._ttl = None
    instance._timestamp = None
    instance._conditional = None
    instance._batch = None
    instance._timeout = models.connection.NOT_SET
    instance._is_persisted = persisted
    instance._connection = None
    managers = {}
    # Each value manager keeps its instance (cqlengine itself never reads
    # it). A strong reference would make every instance a reference cycle,
    # freed only by the garbage collector: a weak proxy lets an instance go
    # as soon as it is dropped (measured: a third fewer collections per read).
    owner = weakref.proxy(instance)
    for name, column in instance._columns.items():
        given = name in values
        if given:
            value = values[name]
        else:
            value = column.get_default() if column.has_default else None
        if value is not None or isinstance(column, BaseContainerColumn):
            value = column.to_python(value)
        manager = column.value_manager(owner, column, value)
        if persisted:
            _keep_as_previous(manager)  # explicit stays False
        else:
            manager.explicit = given
        managers[name] = manager
    instance._values = managers


def _keep_as_previous(manager: Any) -> None:
    """``manager.reset_previous_value()``, without deep-copying an immutable value."""
    if type(manager) is BaseValueManager and type(manager.value) in _IMMUTABLE_VALUES:
        manager.previous_value = manager.value
    elif type(manager) is BaseValueManager and type(manager.value) is list and isinstance(manager.column, Vector):
        # A vector's elements are numbers (immutable): a copy of the list is
        # its deep copy, made in a fraction of the time (a row of 256 floats
        # otherwise costs 256 deepcopy calls).
        manager.previous_value = list(manager.value)
    else:
        manager.reset_previous_value()


def _created(model: Any, values: dict[str, Any]) -> Any:
    """The new instance cqlengine's ``Model.create`` saves: every value must
    name a column, and the instance gets the options of a plain queryset."""
    extra = set(values) - set(model._columns)
    if extra:
        raise ValidationError(f"Incorrect columns passed: {extra}")
    instance = model(**values)
    # What create's chain .batch(None).ttl(None).consistency(None)
    # .if_not_exists(False).timestamp(None).if_exists(False) sets, without the
    # seven closures cqlengine's descriptors make for it.
    instance._batch = None
    instance._ttl = None
    instance.__consistency__ = None
    instance._if_not_exists = False
    instance._timestamp = None
    instance._if_exists = False
    return instance


def make_model_base(ext: CQLAlchemy) -> type:
    """The abstract ``db.Model`` of one extension."""
    return type(models.Model)(
        "Model", (ModelMixin, models.Model), {"__abstract__": True, "__cqlalchemy__": ext, "__module__": __name__}
    )


class UserTypeMixin:
    """Methods every ``db.UserType`` gains on top of cqlengine's ``UserType``."""

    def to_dict(
        self,
        *,
        only: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        mode: Mode = "python",
    ) -> dict[str, Any]:
        """This value's fields by name, as :meth:`ModelMixin.to_dict`; a model's
        ``to_dict`` calls it for its user-defined type columns.

        Raises ``ValueError`` naming a name of ``only`` or ``exclude`` that is
        not a field, ``TypeError`` if either is a string instead of a list.

        .. versionadded:: 0.1
        """
        return columns_dict(self, only=only, exclude=exclude, mode=mode)


def make_user_type_base(ext: CQLAlchemy) -> type:
    """The ``db.UserType`` of one extension (found by ``sync_db``)."""
    return type("UserType", (UserTypeMixin, usertype.UserType), {"__cqlalchemy__": ext, "__module__": __name__})
