"""Dataclasses whose ``__eq__``, ``__hash__`` and ``__repr__`` are shared.

Before Python 3.13, ``dataclass`` compiles every method it generates with an
``exec`` of its own: six for a frozen class.  hazrun's three dozen value
types cost 20 ms of every start that way, a sixth of a run in which nothing
changed.  :func:`value` and :func:`record` let ``dataclass`` generate only
what must be made per class (``__init__``, and for a frozen class the
``__setattr__`` and ``__delattr__`` that refuse), and give every class the
same three functions below, which read the fields' ``compare``, ``hash``
and ``repr`` flags as ``dataclass`` would.  The classes stay dataclasses:
``fields``, ``replace`` and ``asdict`` work on them as on any other.
"""
from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Callable, Optional, Tuple, TypeVar, overload

T = TypeVar("T", bound=type)


def _names(cls: type, flag: str) -> Tuple[str, ...]:
    """The names of ``cls``'s fields that take part in ``flag`` (compare,
    hash, repr), worked out once per class."""
    attr = f"_hazrun_{flag}_fields"
    names = cls.__dict__.get(attr)
    if names is None:
        fields = dataclasses.fields(cls)
        if flag == "hash":  # hash=None means: as compare
            names = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        else:
            names = tuple(f.name for f in fields if getattr(f, flag))
        setattr(cls, attr, names)
    return names


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = _names(self.__class__, "compare")
    return tuple([getattr(self, n) for n in names]) == \
        tuple([getattr(other, n) for n in names])


def _hash(self: Any) -> int:
    return hash(tuple([getattr(self, n) for n in _names(self.__class__, "hash")]))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in _names(self.__class__, "repr"))
    return f"{self.__class__.__qualname__}({fields})"


def _share(cls: T, eq: bool, hashable: bool) -> T:
    # What the class defines itself wins, as with dataclass.
    own = cls.__dict__
    if "__repr__" not in own:
        cls.__repr__ = _repr  # type: ignore[assignment]
    if eq and "__eq__" not in own:
        cls.__eq__ = _eq  # type: ignore[assignment]
        if "__hash__" not in own or own["__hash__"] is None:
            # dataclass: a frozen class hashes its fields; a mutable one
            # that compares by value cannot be hashed.
            cls.__hash__ = _hash if hashable else None  # type: ignore[assignment]
    return cls


def value(cls: T) -> T:
    """``@dataclass(frozen=True)``: an immutable value, compared and hashed
    by its fields."""
    return _share(dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls),
                  eq=True, hashable=True)


@overload
def record(cls: T) -> T: ...
@overload  # noqa: E302
def record(cls: None = None, *, eq: bool = True) -> Callable[[T], T]: ...
def record(cls: Optional[T] = None, *, eq: bool = True) -> Any:  # noqa: E302
    """``@dataclass`` (``eq=False``: compared by identity): a mutable
    record."""
    def wrap(c: T) -> T:
        return _share(dataclasses.dataclass(eq=False, repr=False)(c), eq=eq, hashable=False)
    return wrap if cls is None else wrap(cls)
