"""Immutable typed records: the shape of results that cross layers (and become JSON).

A subclass of :class:`Record` declares its fields as annotations, each followed by its docstring,
as a dataclass would; type checkers treat it as a frozen dataclass (PEP 681).  Records compare
by value, print as ``Name(field=value, ...)``, refuse assignment, and have :meth:`Record.replace`
and :meth:`Record.to_dict`.  Unlike :mod:`dataclasses` (which generates and compiles code per
class, about a millisecond each at start-up) the methods are shared, so defining a record costs
next to nothing; a command that imports a dozen of them stays fast.

What the types cannot say goes on the field as :data:`~typing.Annotated` metadata mappings,
read by :func:`field_meta`: ``key`` (the JSON key when it is not the field name), ``json=False``
(not serialized), ``empty`` (what None serializes as), ``optional=True`` (left out of the JSON
when None: a field added to a schema without changing older output), and display hints such as
``hex``.
"""

from __future__ import annotations

import inspect
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self, dataclass_transform
else:
    _C = TypeVar("_C")

    def dataclass_transform(**_: Any) -> Callable[[_C], _C]:
        return lambda cls: cls


@dataclass_transform(frozen_default=True)
class Record:
    """Base of immutable records (see the module doc)."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}
    #: When set, :meth:`to_dict` starts with ``"schema": SCHEMA_VERSION`` (a versioned JSON contract).
    SCHEMA_VERSION: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = tuple(n for n, t in inspect.get_annotations(cls).items()
                    if "ClassVar" not in str(t) and n not in cls._fields)
        cls._fields = cls._fields + own
        cls._defaults = {**cls._defaults, **{n: cls.__dict__[n] for n in own if n in cls.__dict__}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name, fields = type(self).__name__, self._fields
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} arguments, {len(args)} given")
        values = dict(zip(fields, args, strict=False))
        for k, v in kwargs.items():
            if k not in fields or k in values:
                raise TypeError(f"{name}() got an unexpected or repeated argument {k!r}")
            values[k] = v
        for f in fields:
            if f in values:
                object.__setattr__(self, f, values[f])
            elif f in self._defaults:
                object.__setattr__(self, f, self._defaults[f])
            else:
                raise TypeError(f"{name}() missing argument {f!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``."""
        return type(self)(**{f: changes.pop(f, getattr(self, f)) for f in self._fields}, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON types, field by field in declaration order, by the fields' metadata."""
        out: dict[str, Any] = {} if self.SCHEMA_VERSION is None else {"schema": self.SCHEMA_VERSION}
        for name, md in field_meta(type(self)).items():
            if md.get("json", True) is False:
                continue
            value = getattr(self, name)
            if value is None and md.get("optional"):
                continue
            if value is None and "empty" in md:
                value = md["empty"]
            out[md.get("key", name)] = encode(value)
        return out


_META: dict[type, dict[str, dict[str, Any]]] = {}


def field_meta(cls: type[Record]) -> dict[str, dict[str, Any]]:
    """Each field of ``cls`` with its merged ``Annotated`` metadata, in field order.

    Only annotations that use ``Annotated`` are evaluated (once per class, on first use)."""
    out = _META.get(cls)
    if out is None:
        out = {}
        for klass in reversed(cls.__mro__):
            namespace = vars(sys.modules[klass.__module__])
            for name, hint in inspect.get_annotations(klass).items():
                if name not in cls._fields:
                    continue
                md: dict[str, Any] = {}
                if isinstance(hint, str) and "Annotated[" in hint:
                    hint = eval(hint, namespace)  # the class's own annotation, in its module
                for extra in getattr(hint, "__metadata__", ()):
                    md.update(extra)
                out[name] = md
        _META[cls] = out = {f: out[f] for f in cls._fields}
    return out


def encode(value: Any) -> Any:
    """``value`` as JSON types: records and other objects by their ``to_dict``, UUIDs as text,
    tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value
