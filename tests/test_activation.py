"""Zero-code activation: the installed start-up hook in fresh interpreters."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from inference_triton_preproc.validate.default_model import default_model_path

def _start_up_hook_installed() -> bool:
    """Whether this interpreter's site-packages hold the distribution's start-up .pth file."""
    import site
    from pathlib import Path

    return any((Path(d) / "inference_triton_preproc.pth").is_file() for d in site.getsitepackages() + [site.getusersitepackages()])


# CI installs the distribution, so there a missing hook fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not _start_up_hook_installed() and not os.environ.get("CI"),
    reason="needs the package installed with pip (its start-up .pth file)",
)

CHECK = """
import numpy as np, torch
from inference_models import AutoModel
from inference_triton_preproc.plugin.adapters import STATE_ATTRIBUTE, ModelPlan
model = AutoModel.from_pretrained({path!r}, device=torch.device("cpu"))
wrapped = getattr(type(model).pre_process, "_triton_preproc_backend", None)
frame = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
tensor, meta = model.pre_process([frame], input_color_format="bgr")
state = model.__dict__.get(STATE_ATTRIBUTE)
served = state is not None and isinstance(state.plan(model), ModelPlan) and not state.logged
print("RESULT", wrapped, served, tuple(tensor.shape))
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RFDETR_")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(default_model_path("torch"))


def test_env_var_alone_activates_the_backend(model_path) -> None:
    result = run_python(CHECK.format(path=model_path), RFDETR_USE_TRITON_PREPROC="1", TRITON_INTERPRET="1")
    assert "RESULT torch True (1, 3, 312, 312)" in result.stdout, result.stderr[-3000:]


def test_env_var_off_leaves_the_host_alone(model_path) -> None:
    result = run_python(CHECK.format(path=model_path), RFDETR_USE_TRITON_PREPROC="0", TRITON_INTERPRET="1")
    assert "RESULT None False (1, 3, 312, 312)" in result.stdout, result.stderr[-3000:]


def test_bad_value_fails_loudly_at_adapter_import() -> None:
    code = "import inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch"
    result = run_python(code, RFDETR_USE_TRITON_PREPROC="maybe")
    assert result.returncode != 0
    assert "RFDETR_USE_TRITON_PREPROC='maybe' is not valid" in result.stderr


def test_gc_freeze_alone_fails_loudly_at_adapter_import() -> None:
    code = "import inference_models.models.rfdetr.rfdetr_instance_segmentation_pytorch"
    result = run_python(code, RFDETR_TRITON_GC_FREEZE="1")
    assert result.returncode != 0
    assert "RFDETR_TRITON_GC_FREEZE (gc_freeze) needs RFDETR_TRITON_FULLPOSTPROC" in result.stderr


def test_start_up_hook_runs_and_imports_nothing_heavy() -> None:
    # What the hook costs is what it imports: the standard library only (its time is a
    # measurement, `python -X importtime -c pass`, not a test).
    result = run_python("import sys; print(sorted(m for m in ('torch', 'triton', 'numpy', 'inference_models') if m in sys.modules))")
    assert result.stdout.strip() == "[]", result.stderr
    timing = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, timeout=60)
    assert re.search(r"import time:.*\|\s+inference_triton_preproc\._startup$", timing.stderr, re.MULTILINE), (
        "the start-up hook did not run: is the package installed with its .pth file?"
    )
