"""Decoding settings shared by both backends, with upstream's per-task defaults.

- HMER (Uni-MuMER's vLLM script): temperature 0.2, top_p 0.8, top_k 50, 2048 new tokens,
  stop at ``<|im_end|>`` / ``<|endoftext|>``.
- FER (UniFER's evaluation): greedy, 1024 new tokens, images resized to 224×224.

Any value given on the command line overrides the preset.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from evaluators.model_family import DEFAULT_FAMILY

__all__ = [
    "DEFAULT_STOP",
    "TASK_PRESETS",
    "Sampling",
    "clean_output",
    "record_seed",
    "resolve_sampling",
]

#: Qwen's end-of-turn and end-of-text tokens.
DEFAULT_STOP: tuple[str, ...] = DEFAULT_FAMILY.stop  # the same for Qwen2.5-VL, Qwen3-VL and Qwen3.5


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters; ``temperature == 0`` means greedy.

    Example:

    >>> Sampling(temperature=0.0).greedy, Sampling(temperature=0.2).greedy
    (True, False)
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 1024
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = field(default=DEFAULT_STOP)
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        return out


#: Upstream's defaults per task, and the image size each task's upstream evaluation used.
TASK_PRESETS: dict[str, dict[str, Any]] = {
    "hmer": {
        "sampling": Sampling(temperature=0.2, top_p=0.8, top_k=50, max_new_tokens=2048),
        "image_size": None,
    },
    "fer": {"sampling": Sampling(temperature=0.0, max_new_tokens=1024), "image_size": 224},
}


def resolve_sampling(task: str, overrides: dict[str, Any] | None = None) -> Sampling:
    """The task's preset with the non-``None`` ``overrides`` applied.

    Example:

    >>> s = resolve_sampling("hmer", {"temperature": None, "max_new_tokens": 64, "n": 3})
    >>> s.temperature, s.top_p, s.max_new_tokens, s.n
    (0.2, 0.8, 64, 3)
    >>> resolve_sampling("fer").greedy
    True
    """
    base: Sampling = TASK_PRESETS[task]["sampling"]
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "stop" in given:
        given["stop"] = tuple(given["stop"])
    return replace(base, **given)


def clean_output(text: str, stop: tuple[str, ...] | list[str] = DEFAULT_STOP) -> str:
    """Cut a generation at the first stop string and strip surrounding whitespace.

    Example:

    >>> clean_output(" x ^ { 2 } <|im_end|>junk")
    'x ^ { 2 }'
    """
    cut = len(text)
    for token in stop:
        position = text.find(token)
        if position != -1:
            cut = min(cut, position)
    return text[:cut].strip()


def record_seed(seed: int, record_id: str) -> int:
    """The sampling seed of one record: a hash of the run's ``seed`` and the record's id.

    Both backends seed each record with it, so a record's samples do not depend on which other records
    share its batch, chunk or shard, nor on whether the run was interrupted and resumed.

    Example:

    >>> record_seed(0, "img_1") == record_seed(0, "img_1"), record_seed(0, "img_1") == record_seed(1, "img_1")
    (True, False)
    >>> 0 <= record_seed(0, "img_1") < 2**31
    True
    """
    digest = hashlib.sha256(f"{int(seed)}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
