"""Argument handling of ``preprocess``: errors name the argument, nothing is written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from inference_triton_preproc import IMAGENET_MEAN, IMAGENET_STD, preprocess
from inference_triton_preproc.api import resolve_device
from inference_triton_preproc.reference import preprocess_reference

DEVICE = resolve_device(None)


@pytest.fixture
def frame(photos) -> np.ndarray:
    return photos["chelsea"]


def sentinel_out(n: int = 1, size=(32, 40), dtype=torch.float32) -> torch.Tensor:
    return torch.full((n, 3, *size), 7.0, dtype=dtype, device=DEVICE)


BAD_INPUTS = [
    ("float frame", lambda f: f.astype(np.float32), TypeError, "uint8"),
    ("uint16 frame", lambda f: f.astype(np.uint16), TypeError, "uint8"),
    ("one channel", lambda f: f[..., :1], ValueError, "3 channels"),
    ("four channels", lambda f: np.concatenate([f, f[..., :1]], axis=2), ValueError, "3 channels"),
    ("2-D array", lambda f: f[..., 0], ValueError, "3-D"),
    ("zero height", lambda f: f[:0], ValueError, "empty"),
    ("zero width", lambda f: f[:, :0], ValueError, "empty"),
    ("bad list item", lambda f: [f, f.astype(np.float64)], TypeError, r"images\[1\]"),
    ("empty list", lambda f: [], ValueError, "at least one"),
    ("not an array", lambda f: "frame.jpg", TypeError, "images"),
    ("float tensor", lambda f: torch.from_numpy(f).float(), TypeError, "uint8"),
]


@pytest.mark.parametrize(("label", "make", "error", "match"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_images_raise_and_leave_out_untouched(frame, label, make, error, match) -> None:
    out = sentinel_out()
    with pytest.raises(error, match=match) as info:
        preprocess(make(frame), (32, 40), out=out)
    assert "images" in str(info.value)
    assert bool((out == 7.0).all())


BAD_ARGS = [
    ({"size": 0}, ValueError, "size"),
    ({"size": (32, -1)}, ValueError, "size"),
    ({"size": (32, 40, 3)}, TypeError, "size"),
    ({"size": (32.0, 40)}, TypeError, "size"),
    ({"mode": "bicubic"}, ValueError, "mode"),
    ({"input_color": "gray"}, ValueError, "input_color"),
    ({"mean": (0.5, 0.5)}, ValueError, "mean"),
    ({"std": (0.5, 0.0, 0.5)}, ValueError, "std"),
    ({"out_dtype": torch.float64}, ValueError, "out_dtype"),
    ({"out": "buffer"}, TypeError, "out"),
    ({"out": torch.zeros(1, 3, 32, 41)}, ValueError, "shape"),
    ({"out": torch.zeros(2, 3, 32, 40)}, ValueError, "shape"),
    ({"out": torch.zeros(1, 3, 32, 40, dtype=torch.float16)}, ValueError, "dtype"),
    ({"out": torch.zeros(1, 3, 40, 32).transpose(2, 3)}, ValueError, "contiguous"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGS, ids=[str(sorted(b[0])) + str(i) for i, b in enumerate(BAD_ARGS)])
def test_bad_arguments_raise_naming_them(frame, kwargs, error, match) -> None:
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("out"), torch.Tensor):
        kwargs["out"] = kwargs["out"].to(DEVICE).fill_(7.0)
    size = kwargs.pop("size", (32, 40))
    with pytest.raises(error, match=match):
        preprocess(frame, size, **kwargs)
    if isinstance(kwargs.get("out"), torch.Tensor):
        assert bool((kwargs["out"] == 7.0).all())


def test_out_is_written_in_place_and_returned(frame) -> None:
    out = sentinel_out(size=(24, 30))
    got = preprocess(frame, (24, 30), out=out, mode="cv2")
    assert got is out
    assert torch.equal(out.cpu(), preprocess_reference(frame, (24, 30), mode="cv2"))


def test_int_size_means_square(frame) -> None:
    assert preprocess(frame, 20, mode="cv2").shape == (1, 3, 20, 20)


@pytest.mark.parametrize(
    "view",
    [
        lambda f: f[10:90, 20:130],  # ROI slice: non-contiguous rows
        lambda f: f[:, ::-1],  # negative column stride
        lambda f: f[::-2, ::3],  # negative and stepped strides
        lambda f: np.asfortranarray(f),  # column-major
    ],
    ids=["roi", "flip", "step", "fortran"],
)
@pytest.mark.parametrize("mode", ["pil", "cv2"])
def test_strided_numpy_frames(frame, view, mode: str) -> None:
    image = view(frame)
    got = preprocess(image, (28, 36), mode=mode).cpu()
    assert torch.equal(got, preprocess_reference(np.ascontiguousarray(image), (28, 36), mode=mode))


def test_nhwc_tensor_and_strided_tensor_views(photos) -> None:
    frames = np.stack([photos["coffee"], photos["coffee"][::-1].copy()])
    batch = torch.from_numpy(frames).to(DEVICE)
    want = preprocess_reference(list(frames), (30, 44), mode="pil")
    assert torch.equal(preprocess(batch, (30, 44)).cpu(), want)
    # A channels-first tensor seen as HWC: strides the kernel reads directly.
    chw = torch.from_numpy(frames[0]).permute(2, 0, 1).contiguous().to(DEVICE)
    hwc = chw.permute(1, 2, 0)
    assert not hwc.is_contiguous()
    assert torch.equal(preprocess(hwc, (30, 44)).cpu(), want[:1])


def test_custom_mean_std(frame) -> None:
    kwargs = {"mean": (0.5, 0.25, 0.0), "std": (0.5, 2.0, 1.0)}
    got = preprocess(frame, (16, 16), mode="cv2", **kwargs).cpu()
    assert torch.equal(got, preprocess_reference(frame, (16, 16), mode="cv2", **kwargs))
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_no_cuda_and_no_interpreter_says_how_to_run_on_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import numpy as np\n"
        "from inference_triton_preproc import preprocess\n"
        "try:\n"
        "    preprocess(np.zeros((4, 4, 3), np.uint8), 2)\n"
        "except RuntimeError as e:\n"
        "    print('RuntimeError:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "RuntimeError:" in result.stdout, result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout


def test_repeated_calls_into_out_skip_only_checks_they_already_passed(monkeypatch, photos) -> None:
    from inference_triton_preproc import api
    from parity import TOLERANCE

    checks = []
    check_request = api.check_request
    monkeypatch.setattr(api, "check_request", lambda *args: checks.append(args) or check_request(*args))
    api._PLANS.clear()
    a, b = photos["coffee"][:60, :80], photos["coffee"][100:160, 200:280]  # one geometry: strided views
    out = torch.full((1, 3, 24, 24), 7.0, device=DEVICE)
    assert preprocess(a, 24, out=out) is out
    assert torch.equal(out.cpu(), preprocess_reference(a, 24))
    assert preprocess(b, 24, out=out) is out  # same arguments and geometry: no new checks
    assert torch.equal(out.cpu(), preprocess_reference(b, 24))
    assert len(checks) == 1
    # Every argument, the frame's geometry and out are part of what was checked: a change
    # in any of them is checked once, and its result is still exact.
    variants = [
        (b, {"mean": (0.5, 0.5, 0.5)}),
        (b, {"std": (0.2, 0.3, 0.4)}),
        (b, {"input_color": "rgb"}),
        (b, {"mode": "cv2"}),
        (b, {"mode": "torch"}),
        (b[::-1], {}),  # negative strides
        (np.ascontiguousarray(b), {}),
        ([b], {}),
    ]
    for _ in range(2):
        for image, kwargs in variants:
            frame = image[0] if isinstance(image, list) else image
            preprocess(image, 24, out=out, **kwargs)
            want = preprocess_reference(frame, 24, **kwargs)
            assert (out.cpu() - want).abs().max().item() <= TOLERANCE[kwargs.get("mode", "pil")], kwargs
    assert len(checks) == 1 + len(variants)
    out16 = torch.empty((1, 3, 24, 24), dtype=torch.float16, device=DEVICE)
    preprocess(b, 24, out=out16, out_dtype=torch.float16)
    assert torch.equal(out16.cpu(), preprocess_reference(b, 24, out_dtype=torch.float16))
    # An out that fails its checks fails them every time; lists are never remembered.
    for _ in range(2):
        with pytest.raises(ValueError, match="out"):
            preprocess(b, 24, out=torch.empty((1, 3, 20, 20), device=DEVICE))
        preprocess(b, 24, out=out, mean=[0.5, 0.5, 0.5])
    assert len(checks) == 1 + len(variants) + 1 + 4
