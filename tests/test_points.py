"""``plugin.points``: the response ``Point`` objects made directly, against pydantic-validated ones."""

from __future__ import annotations

import copy
import pickle

import pytest
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from inference_triton_preproc.plugin.points import point_builder

VERTICES = [[0.0, 0.0], [1919.0, 1079.0], [17.0, 3.0], [3.0, 17.0], [2.0**31 - 1, -5.0], [0.5, 1e-300]]


@pytest.fixture(scope="module")
def prediction_class():
    from inference.core.entities.responses.inference import InstanceSegmentationPrediction

    return InstanceSegmentationPrediction


def _prediction(cls, points):
    return cls(x=1.0, y=2.0, width=3.0, height=4.0, confidence=0.5, class_id=1, points=points, **{"class": "a"})


def test_built_points_equal_validated_points(prediction_class) -> None:
    build = point_builder(prediction_class)
    assert build is not None
    point = prediction_class.model_fields["points"].annotation.__args__[0]
    got, want = build(VERTICES), [point(x=x, y=y) for x, y in VERTICES]
    assert got == want and len(got) == len(VERTICES)
    for a, b in zip(got, want):
        assert type(a) is type(b) is point
        assert a.__dict__ == b.__dict__ and [type(v) for v in a.__dict__.values()] == [float, float]
        assert a.model_fields_set == b.model_fields_set == {"x", "y"}
        assert a.__pydantic_extra__ is b.__pydantic_extra__ is None
        assert a.__pydantic_private__ is b.__pydantic_private__ is None
        assert a.model_dump() == b.model_dump() and a.model_dump_json() == b.model_dump_json()
        assert a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True)
        assert repr(a) == repr(b)
    assert build([]) == []
    # Pairs read off one flat list (what the adapter surface passes) give the same points.
    flat = iter([v for vertex in VERTICES for v in vertex])
    assert build(zip(flat, flat)) == want


def test_a_prediction_keeps_the_built_points_and_equals_the_validated_one(prediction_class) -> None:
    points = point_builder(prediction_class)(VERTICES)
    ours = _prediction(prediction_class, points)
    stock = _prediction(prediction_class, [{"x": x, "y": y} for x, y in VERTICES])
    assert all(a is b for a, b in zip(ours.points, points))
    ours.detection_id = stock.detection_id
    assert ours == stock and ours.model_dump() == stock.model_dump() and ours.model_dump_json() == stock.model_dump_json()


def test_the_shared_fields_set_never_changes_and_copies_are_independent(prediction_class) -> None:
    points = point_builder(prediction_class)(VERTICES)
    assert len({id(p.__pydantic_fields_set__) for p in points}) == 1
    dumps = [p.model_dump() for p in points]
    points[0].x = 7.0
    assert points[0].model_dump() == {"x": 7.0, "y": 0.0}
    assert [p.model_dump() for p in points[1:]] == dumps[1:]
    assert all(p.model_fields_set == {"x", "y"} for p in points)
    moved = points[1].model_copy(update={"y": 5.0})
    assert moved.model_dump() == {"x": 1919.0, "y": 5.0} and points[1].model_dump() == dumps[1]
    assert moved.__pydantic_fields_set__ is not points[1].__pydantic_fields_set__
    assert copy.deepcopy(points[2]) == points[2] and pickle.loads(pickle.dumps(points)) == points


class _Validated(BaseModel):
    x: float
    y: float

    @field_validator("x")
    @classmethod
    def _round(cls, value: float) -> float:
        return round(value)


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    x: float
    y: float


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    x: float
    y: float


class _Private(BaseModel):
    x: float
    y: float
    _tag: str = PrivateAttr("t")


class _Integer(BaseModel):
    x: int
    y: float


class _Constrained(BaseModel):
    x: float = Field(ge=0)
    y: float


class _Third(BaseModel):
    x: float
    y: float
    z: float = 0.0


class _Swapped(BaseModel):
    y: float
    x: float


class _NotPydantic:
    x: float
    y: float


@pytest.mark.parametrize(
    "point", [_Validated, _Extra, _Strict, _Private, _Integer, _Constrained, _Third, _Swapped, _NotPydantic], ids=lambda c: c.__name__
)
def test_point_models_whose_validation_may_change_a_value_are_refused(point) -> None:
    class Prediction(BaseModel):
        points: list[point]  # type: ignore[valid-type]

        model_config = ConfigDict(arbitrary_types_allowed=True)

    assert point_builder(Prediction) is None


def test_a_prediction_without_a_list_of_points_is_refused() -> None:
    class NoPoints(BaseModel):
        rle: dict

    class Tupled(BaseModel):
        points: tuple[float, ...]

    assert point_builder(NoPoints) is None and point_builder(Tupled) is None
