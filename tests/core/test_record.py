"""Immutable records: construction like a frozen dataclass, value semantics, JSON by field metadata."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any, ClassVar

import pytest

from vmci.core.record import Record, encode, field_meta


class Point(Record):
    """A point."""

    x: int
    """Across."""
    y: Annotated[int, {"hex": True}]
    """Down."""
    label: Annotated[str, {"key": "LABEL"}] = ""
    """A name."""
    COUNT: ClassVar[int] = 0


class Tagged(Point):
    SCHEMA_VERSION = 3

    tag: Annotated[dict[str, Any] | None, {"empty": {}}] = None
    note: Annotated[str, {"json": False}] = "hidden"


@dataclasses.dataclass(frozen=True)
class PointDC:  # the behaviour a record mirrors
    x: int
    y: int
    label: str = ""


def test_constructs_like_a_frozen_dataclass() -> None:
    for args, kwargs in [((1, 2), {}), ((1,), {"y": 2}), ((), {"x": 1, "y": 2, "label": "a"})]:
        p, q = Point(*args, **kwargs), PointDC(*args, **kwargs)
        assert (p.x, p.y, p.label) == (q.x, q.y, q.label)
    for args, kwargs in [((1,), {}), ((1, 2, "a", 4), {}), ((1, 2), {"z": 0}), ((1, 2), {"x": 1})]:
        with pytest.raises(TypeError):
            PointDC(*args, **kwargs)
        with pytest.raises(TypeError):
            Point(*args, **kwargs)
    assert Point._fields == ("x", "y", "label") and Tagged._fields == ("x", "y", "label", "tag", "note")


def test_value_semantics_and_immutability() -> None:
    p = Point(1, 2)
    assert p == Point(1, 2) and p != Point(1, 3) and hash(p) == hash(Point(1, 2))
    assert p != (1, 2, "") and repr(p) == "Point(x=1, y=2, label='')"
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.x  # type: ignore[misc]
    assert p.replace(y=7) == Point(1, 7) and p == Point(1, 2)
    with pytest.raises(TypeError):
        p.replace(z=1)


def test_json_follows_the_field_metadata() -> None:
    assert Point(1, 2, "a").to_dict() == {"x": 1, "y": 2, "LABEL": "a"}
    t = Tagged(1, 2)
    assert t.to_dict() == {"schema": 3, "x": 1, "y": 2, "LABEL": "", "tag": {}}
    assert t.note == "hidden" and field_meta(Tagged)["y"] == {"hex": True}
    assert field_meta(Point) == {"x": {}, "y": {"hex": True}, "label": {"key": "LABEL"}}
    g = uuid.UUID(int=1)
    assert encode({"a": (Point(0, 1), g)}) == {"a": [{"x": 0, "y": 1, "LABEL": ""}, str(g)]}
