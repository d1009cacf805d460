"""The one place for trl / transformers version workarounds; each names its upstream issue and version range.

Every function here checks for the broken condition itself and does nothing otherwise, so it is safe to call
always. With the pinned set (trl 0.24.0, transformers 5.2.0, see constraints.txt) both are active.

- :func:`ensure_warnings_issued` -- trl <= 0.24's ``GRPOTrainer.__init__`` writes
  ``model.warnings_issued["estimate_tokens"] = True``; transformers dropped the ``warnings_issued`` attribute of
  ``PreTrainedModel`` in 5.1.0 (trl removed the write in huggingface/trl#4960; see huggingface/trl#3257 for the
  traceback and unslothai/unsloth#7854 for the version analysis). LLaMA-Factory 0.9.5 caps trl at 0.24 and
  unitune pins transformers 5.2 (Qwen3.5), so the trainer cannot be built without this.
- :func:`give_models_warnings_issued` -- the same, for models GRPOTrainer loads itself (TRL's own ``trl grpo``,
  a script passing a model id): ``import trl_grpo`` (which the rewards' dotted paths do) gives
  ``PreTrainedModel`` the attribute when transformers is already imported.

Not worked around: from transformers 5.3.0 on, ``transformers.utils.import_utils._is_package_available`` returns
a ``(found, version)`` tuple even when no version is asked for; trl 0.24 reads that tuple as "installed" for every
optional package, imports ``mergekit`` and fails to import ``GRPOTrainer``. The ``train`` extra therefore stops
below transformers 5.3 (tests/test_packaging.py holds it).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["ensure_warnings_issued", "give_models_warnings_issued"]

logger = logging.getLogger(__name__)


def ensure_warnings_issued(model: Any) -> bool:
    """Give ``model`` the empty ``warnings_issued`` dict trl <= 0.24 writes to, when transformers >= 5.1 lacks it.

    Range: trl 0.20-0.24 (the write is in ``GRPOTrainer.__init__``) with transformers >= 5.1.0 (attribute
    removed). A no-op on transformers < 5.1, where ``PreTrainedModel.__init__`` sets it, and on strings (model ids).

    Returns:
        `bool`: whether the attribute was added.

    Example:

    >>> class Model:
    ...     pass
    >>> m = Model()
    >>> ensure_warnings_issued(m), m.warnings_issued
    (True, {})
    >>> ensure_warnings_issued(m)
    False
    """
    if isinstance(model, str) or isinstance(getattr(model, "warnings_issued", None), dict):
        return False
    try:
        model.warnings_issued = {}
    except (AttributeError, TypeError):  # a model that refuses the attribute: let trl report it
        return False
    logger.debug("compat: added model.warnings_issued for trl <= 0.24 on transformers >= 5.1")
    return True


def give_models_warnings_issued() -> bool:
    """Give ``transformers.PreTrainedModel`` a class-level ``warnings_issued`` dict, for trl <= 0.24 on transformers
    >= 5.1, when transformers is already imported.

    :func:`ensure_warnings_issued` needs the model object; TRL's own ``trl grpo`` and scripts that pass
    ``GRPOTrainer`` a model id load the model inside the trainer. They import the rewards (``trl_grpo``) after
    transformers and before the trainer, so ``import trl_grpo`` calls this. The dict is shared by all models;
    trl only records one "warning issued" flag in it. Nothing is imported here: without transformers loaded, or
    on transformers < 5.1 (each model sets its own), or when the attribute exists, it does nothing.

    Returns:
        `bool`: whether the attribute was added.
    """
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    from packaging.version import Version

    if Version(getattr(transformers, "__version__", "0")) < Version("5.1.0"):
        return False
    model_class = transformers.PreTrainedModel
    if hasattr(model_class, "warnings_issued"):
        return False
    model_class.warnings_issued = {}
    logger.debug("compat: added PreTrainedModel.warnings_issued for trl <= 0.24 on transformers >= 5.1")
    return True
