"""The one place for trl / transformers version workarounds; each names its upstream issue and version range.

With the pinned set (trl 0.24.0, transformers 4.57.6, see constraints.txt) no workaround is active: every
function here checks for the broken condition itself and does nothing otherwise, so it is safe to call always.

- :func:`ensure_warnings_issued` -- trl <= 0.24's ``GRPOTrainer.__init__`` writes
  ``model.warnings_issued["estimate_tokens"] = True``; transformers dropped the ``warnings_issued`` attribute of
  ``PreTrainedModel`` in 5.1.0 (trl removed the write in huggingface/trl#4960; see huggingface/trl#3257 for the
  traceback and unslothai/unsloth#7854 for the version analysis). unitune's pins allow trl 0.24 with transformers
  up to 5.6, so trl 0.24 + transformers >= 5.1 cannot build the trainer without this.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["ensure_warnings_issued"]

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
