"""hazrun.values: dataclasses with shared eq, hash and repr behave as the
dataclasses they replace (compare, hash and repr flags of fields included)."""
from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import List, Optional

import pytest

from hazrun.values import record, value


@value
class Point:
    x: int
    y: int = 0
    note: str = dataclasses.field(default="", compare=False)
    secret: Optional[str] = dataclasses.field(default=None, repr=False)


@record
class Box:
    items: List[int] = dataclasses.field(default_factory=list)


@record(eq=False)
class Handle:
    name: str


@value
class Named:
    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclasses.dataclass(frozen=True)
class Reference:
    x: int
    y: int = 0
    note: str = dataclasses.field(default="", compare=False)
    secret: Optional[str] = dataclasses.field(default=None, repr=False)


def test_a_value_is_frozen_compared_hashed_and_shown_as_a_dataclass_is():
    p, q = Point(1, 2, note="a", secret="s"), Point(1, 2, note="b", secret="s")
    ref = Reference(1, 2, note="a", secret="s")
    assert p == q and hash(p) == hash(q) and p != Point(1, 3)
    assert p != (1, 2) and Point(1) == Point(1, 0)
    assert repr(p) == "Point(x=1, y=2, note='a')" == repr(ref).replace("Reference", "Point")
    assert "secret" not in repr(p)  # repr=False: a secret is never shown
    assert hash(p) == hash(ref)  # the same fields hashed the same way
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    assert dataclasses.is_dataclass(p) and dataclasses.replace(p, y=9) == Point(1, 9, secret="s")
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "note": "a", "secret": "s"}
    assert {p: 1}[q] == 1
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p


def test_a_record_is_mutable_compared_by_value_and_not_hashable():
    a, b = Box(), Box()
    assert a == b
    a.items.append(1)
    assert a != b and repr(a) == "Box(items=[1])"
    with pytest.raises(TypeError):
        hash(a)


def test_a_record_without_eq_is_compared_by_identity():
    a, b = Handle("x"), Handle("x")
    assert a != b and a == a and len({a, b}) == 2
    assert repr(a) == "Handle(name='x')"


def test_a_class_keeps_its_own_repr_and_a_recursive_one_ends():
    assert repr(Named("n")) == "<n>"
    box = Box()
    box.items.append(box)  # type: ignore[arg-type]
    assert repr(box) == "Box(items=[...])"


def test_every_hazrun_dataclass_is_made_with_shared_methods():
    """The start-up saving holds only while no module goes back to plain
    @dataclass: each class's __eq__ (if any) and __repr__ are the shared ones."""
    import importlib
    import pkgutil

    import hazrun
    from hazrun import values
    found = 0
    for info in pkgutil.walk_packages(hazrun.__path__, "hazrun."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) \
                    and obj.__module__ == module.__name__:
                found += 1
                assert obj.__repr__ is values._repr or "__repr__" in vars(obj), obj
                eq = obj.__dict__.get("__eq__")
                assert eq is None or eq is values._eq, obj
    assert found >= 30
