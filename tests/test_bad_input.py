"""Bad input to preprocess, preprocess_reference, the environment and the CLIs: each
class of defect a bad-input sweep found, kept as properties."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_triton_preproc import preprocess
from inference_triton_preproc._env import VARIABLES, ConfigurationError, check_environment
from inference_triton_preproc._validation import MAX_SIZE
from inference_triton_preproc.api import resolve_device
from inference_triton_preproc.reference import preprocess_reference

DEVICE = resolve_device(None)
FRAME = np.random.default_rng(14).integers(0, 256, (6, 6, 3), dtype=np.uint8)
SIZE = 4
ENTRY_POINTS = (preprocess, preprocess_reference)


class HashableList(list):
    """A list that hashes by identity: equal keys, different values over time."""

    __hash__ = object.__hash__  # type: ignore[assignment]


def _mutations() -> list[tuple[str, object, Callable[[], None]]]:
    tensor_mean = torch.tensor([0.5, 0.5, 0.5])
    tensor_std = torch.tensor([0.5, 0.5, 0.5])
    listed_std = HashableList([0.5, 0.5, 0.5])
    array_mean = np.array([0.5, 0.5, 0.5])

    def set_item(container: object, value: float) -> Callable[[], None]:
        return lambda: container.__setitem__(0, value)

    return [
        ("mean", tensor_mean, set_item(tensor_mean, 0.0)),
        ("std", listed_std, set_item(listed_std, 2.0)),
        ("mean", array_mean, set_item(array_mean, 0.25)),
        ("std", tensor_std, set_item(tensor_std, 0.0)),
    ]


@pytest.mark.parametrize("case", range(4))
def test_out_fast_path_never_reuses_a_mutated_argument(case: int) -> None:
    name, arg, mutate = _mutations()[case]
    out = torch.empty((1, 3, SIZE, SIZE), device=DEVICE)
    preprocess(FRAME, SIZE, out=out, **{name: arg})
    mutate()
    value = arg.tolist() if hasattr(arg, "tolist") else list(arg)
    if 0.0 in value and name == "std":
        with pytest.raises(ValueError, match="std"):
            preprocess(FRAME, SIZE, out=out, **{name: arg})
        return
    preprocess(FRAME, SIZE, out=out, **{name: arg})
    assert torch.equal(out.cpu(), preprocess_reference(FRAME, SIZE, **{name: tuple(value)}))


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(
        st.tuples(st.floats(allow_nan=True), st.floats(), st.floats()),
        st.text(max_size=4),
        st.dictionaries(st.integers(0, 2), st.floats(0, 1), max_size=3),
        st.lists(st.floats(-2, 2), min_size=0, max_size=5),
        st.tuples(st.booleans(), st.just(0.5), st.just(0.5)),
    ),
    st.sampled_from(("mean", "std")),
    st.sampled_from((torch.float32, torch.float16)),
)
def test_mean_and_std_are_three_reals_usable_in_float32(values: object, name: str, dtype: torch.dtype) -> None:
    """Either both entry points reject the value naming the argument, or the output is finite."""
    with np.errstate(over="ignore"):
        ok = (
            isinstance(values, (tuple, list))
            and len(values) == 3
            and not any(isinstance(v, bool) for v in values)
            and all(np.isfinite(np.float32(v)) for v in values)
            and all(np.float32(v) == 0 or abs(np.float32(v)) >= 2.0**-126 for v in values)
            and (name == "mean" or all(np.float32(v) != 0 for v in values))
        )
    for entry in ENTRY_POINTS:
        try:
            got = entry(FRAME, SIZE, out_dtype=dtype, **{name: values})
        except (TypeError, ValueError) as error:
            assert name in str(error)
            continue
        assert ok, f"{entry.__name__} accepted {name}={values!r}"
        assert torch.isfinite(got).all()


@pytest.mark.parametrize("values", ["123", "abc", {0: 1, 1: 2, 2: 3}, (1e300, 0, 0), b"123", {1, 2, 3}])
def test_text_mappings_and_float32_overflow_are_rejected_naming_mean(values: object) -> None:
    for entry in ENTRY_POINTS:
        with pytest.raises((TypeError, ValueError), match="mean"):
            entry(FRAME, SIZE, mean=values)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.integers(MAX_SIZE + 1, 2**64), st.integers(max_value=0), st.tuples(st.integers(1, 4), st.integers(MAX_SIZE + 1, 2**41))))
def test_size_beyond_the_documented_bound_is_a_value_error(size: object) -> None:
    for entry in ENTRY_POINTS:
        with pytest.raises(ValueError, match="size"):
            entry(FRAME, size)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages without CUDA")
@pytest.mark.parametrize("device", ["cuda", 0, "cuda:0", "bogus", "tpu", -1])
def test_device_errors_name_device(device: object) -> None:
    with pytest.raises(ValueError, match="device"):
        preprocess(FRAME, SIZE, device=device)


@pytest.mark.parametrize("device", [1.5, True, [0]])
def test_device_of_the_wrong_type_is_a_type_error(device: object) -> None:
    with pytest.raises(TypeError, match="device"):
        preprocess(FRAME, SIZE, device=device)


@pytest.mark.parametrize("mode", ["pil", "torch"])
def test_read_only_frames_give_exact_results_without_warnings(mode: str) -> None:
    frame = FRAME.copy()
    frame.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = preprocess(frame, SIZE, mode=mode, input_color="rgb")
        want = preprocess_reference(frame, SIZE, mode=mode, input_color="rgb")
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("variable", [v.name for v in VARIABLES])
def test_every_variable_is_parsed_up_front(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    from inference_triton_preproc import api

    monkeypatch.setenv(variable, "bogus")
    with pytest.raises(ConfigurationError, match=variable):
        check_environment()
    monkeypatch.setattr(api, "_environment_checked", False)
    with pytest.raises(ConfigurationError, match=variable):
        preprocess(FRAME, SIZE)


def test_the_table_declares_the_variables_the_package_reads() -> None:
    from inference_triton_preproc.plugin import config
    from inference_triton_preproc.runtime.graphs import GRAPHS_ENV
    from inference_triton_preproc.runtime.ingest import INGEST_ENV

    declared = {v.name for v in VARIABLES}
    assert {config.ENABLE_VAR, config.MODE_VAR, config.STRICT_VAR, INGEST_ENV, GRAPHS_ENV} <= declared


@pytest.mark.parametrize("command", ["probe", "bench"])
@pytest.mark.parametrize("target", ["/proc/x", "directory"])
def test_unwritable_json_exits_2_before_any_work(
    command: str, target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    module = importlib.import_module(f"inference_triton_preproc.{command}")
    path = str(tmp_path) if target == "directory" else target
    monkeypatch.setattr(module, "preprocess", lambda *a, **k: pytest.fail("work ran before the path was checked"))
    assert module.main(["--json", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --json")
