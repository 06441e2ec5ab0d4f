"""The ``Point`` objects of polygon responses, made without one pydantic validation per vertex.

A 1080p frame's polygon responses hold 10-30 thousand ``Point`` objects. The stock path
validates each one, and each validated ``Point`` brings two objects the cyclic garbage
collector tracks: the instance and its own ``__pydantic_fields_set__``. Making them
directly, each step over a whole polygon at once, takes about a third of the time. (Those objects also drive the full garbage
collections of a pipeline; halving them did not make those fewer in the measured runs;
:mod:`..runtime.heap` is what does.)

:func:`point_builder` makes the same objects directly. Each instance gets the four slots
pydantic's validation gives it: ``__dict__`` ``{"x": x, "y": y}``, ``__pydantic_extra__``
and ``__pydantic_private__`` ``None``, and a fields set holding both field names. That
set is **one object shared by every point of the model**. The points compare equal to
validated ones, dump equal, report the same ``model_fields_set``, and need half the
tracked objects. The set never changes: pydantic only adds the name of a field on
assignment, and both names are already in it. It is used only for point models whose
validation of a Python float is the identity (checked in :func:`point_builder`);
other point models get validated points.

One difference is visible: a ``pickle`` of a response stores the shared set once, so
its bytes differ from a stock response's, though it loads into equal objects.
"""

from __future__ import annotations

import functools
import logging
import typing
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

__all__ = ["point_builder"]

logger = logging.getLogger(__name__)

_FIELDS = ("x", "y")
# pydantic v2's instance layout, in the order BaseModel declares it.
_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")

PointBuilder = Callable[[Iterable[tuple[float, float]]], list[Any]]


def _point_class(prediction_class: type) -> Any:
    """The item type of ``prediction_class``'s ``points: list[Point]`` field, or None."""
    field = getattr(prediction_class, "model_fields", {}).get("points")
    annotation = getattr(field, "annotation", None)
    if typing.get_origin(annotation) is not list:
        return None
    (item,) = typing.get_args(annotation) or (None,)
    return item


def _unbuildable_reason(point: Any) -> str | None:
    """Why direct construction could give ``point`` objects other than validation does, or None."""
    from pydantic import BaseModel

    if not (isinstance(point, type) and issubclass(point, BaseModel)):
        return "not a pydantic model"
    if tuple(BaseModel.__slots__) != _SLOTS:
        return f"pydantic's BaseModel slots are {BaseModel.__slots__}, not {_SLOTS}"
    fields = point.model_fields
    if tuple(fields) != _FIELDS:
        return f"fields {tuple(fields)}, not {_FIELDS}"
    for name, info in fields.items():
        if info.annotation is not float or info.metadata or not info.is_required() or info.validation_alias is not None:
            return f"field {name!r} is not a plain required float"
    decorators = point.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.root_validators or decorators.model_validators:
        return "it has validators"
    config = point.model_config
    if config.get("extra") not in (None, "ignore", "forbid") or config.get("strict"):
        return "its config changes validation (extra or strict)"
    if point.__private_attributes__ or point.__pydantic_post_init__ or point.__pydantic_root_model__:
        return "it has private attributes, a post-init or is a root model"
    validated = point(x=0.5, y=-2.0)
    if (
        validated.__dict__ != {"x": 0.5, "y": -2.0}
        or validated.__pydantic_fields_set__ != set(_FIELDS)
        or validated.__pydantic_extra__ is not None
        or validated.__pydantic_private__ is not None
    ):
        return "its validated instances do not have the expected slots"
    return None


@functools.lru_cache(maxsize=None)
def point_builder(prediction_class: type) -> PointBuilder | None:
    """A function making the ``Point`` list of one polygon of ``prediction_class``, or None.

    Args:
        prediction_class: the pydantic prediction model whose ``points`` field is a
            ``list`` of a point model with float fields ``x`` and ``y`` (inference's
            ``InstanceSegmentationPrediction``).

    Returns:
        ``build(vertices)``, where ``vertices`` is an iterable of ``(x, y)`` pairs of Python
        ``float`` (a sequence of pairs, or pairs read off a flat list); it returns a new list of point objects equal to the validated
        ``Point(x=x, y=y)``, sharing one fields set (see the module docstring). None
        when the point model's validation is not the identity on floats: the caller
        then validates.
    """
    point = _point_class(prediction_class)
    reason = "its points field is not a list" if point is None else _unbuildable_reason(point)
    if reason is not None:
        logger.debug("%s: points validated one by one: %s", prediction_class.__name__, reason)
        return None
    from pydantic import BaseModel

    new = object.__new__
    set_dict, set_fields, set_extra, set_private = (BaseModel.__dict__[name].__set__ for name in _SLOTS)
    shared_fields = set(_FIELDS)
    # Each step runs over the whole polygon inside one C-level map rather than once per
    # vertex in Python: 28-30 % less time on the development CPU than a loop making one
    # point at a time (a 1080p frame, the model loaded).
    consume = deque(maxlen=0).extend

    def build(vertices: Iterable[tuple[float, float]]) -> list[Any]:
        dicts = [{"x": x, "y": y} for x, y in vertices]
        n = len(dicts)
        points = list(map(new, repeat(point, n)))
        consume(map(set_dict, points, dicts))
        consume(map(set_fields, points, repeat(shared_fields, n)))
        consume(map(set_extra, points, repeat(None, n)))
        consume(map(set_private, points, repeat(None, n)))
        return points

    return build
