"""Vectors (Cassandra 5.0 ``vector<type, n>``) and approximate-nearest-neighbour queries.

:class:`Vector` is a cqlengine column, so plain cqlengine can use it too,
through its literal statements; the prepared and compiled paths bind the
same values. :class:`AnnSelectStatement` is cqlengine's select with
``ORDER BY col ANN OF ? LIMIT k`` (and, optionally, a similarity score),
the query vector bound as a parameter like every other value.
"""

from __future__ import annotations

import functools
import math
import numbers
from array import array
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from cassandra import cqltypes
from cassandra.cqlengine import ValidationError, columns
from cassandra.cqlengine.statements import SelectStatement

from . import sai
from .prepared import _value_adjuster

#: The element columns a vector may have (the node accepts any type; these
#: are the numeric ones), with the range of the fixed-size integers.
_INTEGER_BITS: dict[type, int | None] = {
    columns.TinyInt: 8,
    columns.SmallInt: 16,
    columns.BigInt: 64,
    columns.Integer: 32,
    columns.VarInt: None,
}
_FLOATING = (columns.Float, columns.Double)

#: Cassandra 5.0's largest ``LIMIT`` of an ANN query (the node's
#: ``cassandra.sai.vector_search.max_top_k``, 1000 unless changed).
MAX_TOP_K = 1000

#: The score selectors of Cassandra 5.0, by similarity function.
SIMILARITY_FUNCTIONS = {
    "cosine": "similarity_cosine",
    "dot_product": "similarity_dot_product",
    "euclidean": "similarity_euclidean",
}


class Vector(sai.SAIColumn, columns.Column):  # type: ignore[misc]
    """A ``vector<type, dimension>`` column: ``Vector(db.columns.Float, 384)``.

    The element type is one of cqlengine's numeric columns (``Float``,
    ``Double``, ``Integer``, ``BigInt``, ``SmallInt``, ``TinyInt``,
    ``VarInt``, ``Decimal``); only ``Float`` vectors can have an SAI index
    (``index="sai"``) and be searched with :meth:`QuerySet.ann
    <flask_cqlalchemy.query.QuerySet.ann>`.

    Values are lists of numbers; any sequence (a tuple, a numpy array,
    anything with ``tolist()``) is accepted and becomes a list. ``validate``
    raises cqlengine's ``ValidationError`` naming the column for a wrong
    length or element. A float vector with an SAI index also refuses
    non-finite elements and, for cosine similarity, the zero vector, which
    the node refuses to index.
    """

    def __init__(self, value_type: Any, dimension: int, **kwargs: Any) -> None:
        element: Any = value_type() if isinstance(value_type, type) else value_type
        if not _numeric(element):
            raise ValidationError(
                f"a vector's elements must be a numeric column (Float, Integer...), not {value_type!r}"
            )
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValidationError(f"a vector's dimension must be a whole number of at least 1, not {dimension!r}")
        self.value_column = element
        self.dimension = dimension
        self.db_type = f"vector<{self.value_column.db_type}, {dimension}>"
        super().__init__(**kwargs)
        self._element = _element_check(self.value_column)
        self._floating = isinstance(self.value_column, _FLOATING)
        self._for_node = _value_adjuster(self.value_column.cql_type)

    @property
    def indexable(self) -> bool:
        """Whether the node can index this vector for ANN queries (float elements)."""
        return isinstance(self.value_column, columns.Float)

    @property
    def cql_type(self) -> Any:
        return cqltypes.lookup_casstype(
            f"org.apache.cassandra.db.marshal.VectorType({self.value_column.cql_type.typename}, {self.dimension})"
        )

    def validate(self, value: Any) -> list[Any] | None:
        value = super().validate(value)
        if value is None:
            return None
        return self.checked(value, self.column_name or self.db_field_name)

    def checked(self, value: Any, name: str) -> list[Any]:
        """``value`` as a list of this vector's elements; ``ValidationError``
        naming ``name`` if it is not one."""
        items = _as_list(value)
        if items is None:
            raise ValidationError(f"{name}: a vector is a sequence of numbers, not {type(value).__name__}")
        if len(items) != self.dimension:
            raise ValidationError(f"{name}: the vector must have {self.dimension} elements, not {len(items)}")
        if self._floating and all(type(item) is float for item in items):
            elements = list(items)  # the common case, checked at C speed
        else:
            try:
                elements = [self._element(item) for item in items]
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"{name}: {exc}") from None
        if self.sai_options is not None and self.indexable:
            stored = as_float32(elements)
            if not all(math.isfinite(x) for x in stored):
                raise ValidationError(f"{name}: an indexed vector cannot hold NaN or infinity (the node refuses them)")
            if sai.similarity_function(self) == "cosine" and not any(stored):
                raise ValidationError(f"{name}: the zero vector cannot be indexed with cosine similarity")
        return elements

    def to_python(self, value: Any) -> Any:
        if value is None:
            return None
        items = _as_list(value)
        return value if items is None else items

    def to_database(self, value: Any) -> Any:
        # The values the node stores from cqlengine's literal of them: the
        # prepared path binds exactly these (see prepared._float_for_node).
        if value is None:
            return None
        items = _as_list(value)
        if items is None or self._for_node is None:
            return items if items is not None else value
        for_node = self._for_node
        # An infinity is its own literal (prepared._float_for_node does not take it).
        return [x if type(x) is float and math.isinf(x) else for_node(x) for x in items]


def as_float32(elements: list[Any]) -> array[float]:
    """``elements`` rounded to single precision, as a ``Float`` vector is
    stored: 1e39 becomes infinity and 1e-50 zero, so the checks of what the
    node can index look at these, not at the doubles."""
    return array("f", elements)


def _numeric(element: Any) -> bool:
    """Whether ``element`` is a column a vector may hold."""
    kinds = (*_FLOATING, columns.Decimal, *_INTEGER_BITS)
    return isinstance(element, kinds) and not isinstance(element, columns.Counter)


def _as_list(value: Any) -> list[Any] | None:
    """A sequence as a list (numpy arrays through ``tolist``); None if not one."""
    if isinstance(value, (str, bytes, bytearray, Mapping, set, frozenset)):
        return None
    if isinstance(value, list):
        return value
    to_list = getattr(value, "tolist", None)
    if callable(to_list):  # numpy arrays, without importing numpy
        value = to_list()
        return value if isinstance(value, list) else None
    try:
        return list(value)
    except TypeError:
        return None


def _element_check(element: Any) -> Callable[[Any], Any]:
    """The check and conversion of one element of a vector of ``element``s
    (module-level functions, so that a model instance pickles)."""
    if isinstance(element, _FLOATING):
        return _floating
    if isinstance(element, columns.Decimal):
        return functools.partial(_decimal, element)
    bits = next(b for kind, b in _INTEGER_BITS.items() if isinstance(element, kind))
    return functools.partial(_integer, bits, element.db_type)


def _floating(item: Any) -> float:
    if isinstance(item, bool) or not isinstance(item, (numbers.Real, Decimal)):
        raise TypeError(f"{item!r} is not a number")
    try:
        return float(item)
    except OverflowError:  # an int beyond any float
        raise ValueError(f"a number of {len(str(abs(item)))} digits is too large for a float") from None


def _decimal(element: Any, item: Any) -> Decimal:
    if isinstance(item, bool) or not isinstance(item, (numbers.Real, Decimal)):
        raise TypeError(f"{item!r} is not a number")
    return element.validate(item)  # type: ignore[no-any-return]


def _integer(bits: int | None, db_type: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise TypeError(f"{item!r} is not a whole number")
    number = int(item)
    if bits is not None and not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise ValueError(f"{number} does not fit in a {db_type}")
    return number


class AnnSelectStatement(SelectStatement):  # type: ignore[misc]
    """cqlengine's select of a queryset, ordered by ``ANN OF`` a bound vector.

    ``score`` (a similarity function name) adds its selector, under
    ``score_alias``, to the selected columns (which must then be named).
    """

    def __init__(
        self, base: SelectStatement, column: str, vector: list[Any], score: str | None, score_alias: str
    ) -> None:
        super().__init__(
            base.table,
            fields=base.fields,
            count=base.count,
            where=base.where_clauses,
            order_by=None,
            limit=base.limit,
            allow_filtering=base.allow_filtering,
            distinct_fields=base.distinct_fields,
            fetch_size=base.fetch_size,
        )
        self.ann_column = column
        self.vector = vector
        self.score = score
        self.score_alias = score_alias
        self.ann_marker = str(self.context_counter)
        self.score_marker = str(self.context_counter + 1)
        self.context_counter += 2 if score else 1

    def get_context(self) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context()
        context[self.ann_marker] = self.vector
        if self.score:
            context[self.score_marker] = self.vector
        return context

    def __unicode__(self) -> str:
        selected = ", ".join(f'"{f}"' for f in self.fields) if self.fields else "*"
        if self.score:
            function = SIMILARITY_FUNCTIONS[self.score]
            selected += f', {function}("{self.ann_column}", %({self.score_marker})s) AS "{self.score_alias}"'
        text = ["SELECT", selected, "FROM", self.table]
        if self.where_clauses:
            text.append(self._where)
        text.append(f'ORDER BY "{self.ann_column}" ANN OF %({self.ann_marker})s')
        text.append(f"LIMIT {self.limit}")
        if self.allow_filtering:
            text.append("ALLOW FILTERING")
        return " ".join(text)
