"""Stand-ins for the two runtime modules that cannot be installed here: TensorRT and pycuda.

They exist only so that inference-models' real TRT adapter module imports on a machine
without those packages; any attribute is a placeholder class. No test runs an engine.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types


class _Placeholder(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)

    def attribute(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(attr, (), {})

    module.__getattr__ = attribute  # type: ignore[attr-defined]
    return module


def install_stubs() -> None:
    """Put placeholder ``tensorrt`` and ``pycuda.driver`` modules in ``sys.modules``."""
    if "tensorrt" in sys.modules and "pycuda.driver" in sys.modules:
        return
    pycuda = _module("pycuda")
    pycuda.driver = _module("pycuda.driver")  # type: ignore[attr-defined]
    sys.modules.update({"tensorrt": _module("tensorrt"), "pycuda": pycuda, "pycuda.driver": pycuda.driver})
