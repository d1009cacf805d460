"""The exact human-turn prompts of the HMER tasks (each sent as ``"<image>" + prompt``).

``vanilla``, ``tree`` and ``can`` are upstream Uni-MuMER's strings, verbatim. Upstream never published its
Error-Driven-Learning prompts; :data:`ERROR_FIND_PROMPT` and :data:`ERROR_FIX_PROMPT` are **ours**
(written for this project from the paper's description) and contain one ``{pred}`` / ``{marked}`` slot.
"""

from __future__ import annotations

__all__ = [
    "CAN_PROMPT",
    "DELETED",
    "ERROR_END",
    "ERROR_FIND_PROMPT",
    "ERROR_FIX_PROMPT",
    "ERROR_START",
    "IMAGE_TOKEN",
    "MARKERS",
    "TASKS",
    "TASK_SUFFIXES",
    "TREE_PROMPT",
    "VANILLA_PROMPT",
    "human_prompt",
]

IMAGE_TOKEN = "<image>"

VANILLA_PROMPT = (
    "I have an image of a handwritten mathematical expression. "
    "Please write out the expression of the formula in the image using LaTeX format."
)
TREE_PROMPT = (
    "I have an image of a handwritten mathematical expression. Please generate the abstract syntax tree (AST) "
    "of the formula in the image, and then provide its corresponding LaTeX format."
)
CAN_PROMPT = (
    "I have an image of a handwritten mathematical expression. Please identify and count each distinct "
    "visible mathematical symbol in the image, and then provide its corresponding LaTeX format."
)

#: Error-Driven-Learning marker tokens (whitespace-separated in marked formulas).
ERROR_START = "<error_start>"
ERROR_END = "<error_end>"
DELETED = "<deleted>"
MARKERS = frozenset([ERROR_START, ERROR_END, DELETED])

#: Ours (upstream's EDL prompts are not public). ``{pred}`` is the erroneous formula.
ERROR_FIND_PROMPT = (
    "I have an image of a handwritten mathematical expression and its OCR recognition result. Please help me "
    "to detect possible errors in the recognition result and mark the places where errors occur with "
    "<error_start> <error_end> and <deleted>.\n\nerroneous formula: {pred}\nMarked formula: "
)
#: Ours (upstream's EDL prompts are not public). ``{marked}`` is the marked formula.
ERROR_FIX_PROMPT = (
    "I have an image of a handwritten mathematical expression and a predicted formula with error tags, "
    "correct the formula by modifying the parts marked with <error_start> and <error_end> and inserting "
    "content where <deleted> are present. Output the modifications in a single string with the following "
    "format: REPLACE:old -> new for errors to be replaced. INSERT:content after position for missing "
    "content. DELETE:to_delete for parts to be removed.\n\nMarked formula: {marked}\nCorrection log: "
)

#: Task names accepted by ``unitune data hmer --task`` and their dataset-name suffixes (upstream's naming).
TASK_SUFFIXES = {
    "vanilla": "",
    "tree": "_tree",
    "can": "_can",
    "error_find": "_error_find",
    "error_fix": "_error_fix",
}
TASKS = tuple(TASK_SUFFIXES)


def human_prompt(task: str, *, pred: str | None = None, marked: str | None = None) -> str:
    """The full human turn of ``task``, ``<image>`` included.

    Args:
        task (`str`): one of :data:`TASKS`.
        pred (`str`, *optional*): the erroneous formula (``error_find`` only).
        marked (`str`, *optional*): the marked formula (``error_fix`` only).

    Example:

    >>> human_prompt("vanilla") == "<image>" + VANILLA_PROMPT
    True
    >>> human_prompt("error_find", pred="x ^ { 3 }").endswith("erroneous formula: x ^ { 3 }\\nMarked formula: ")
    True
    """
    if task == "vanilla":
        return IMAGE_TOKEN + VANILLA_PROMPT
    if task == "tree":
        return IMAGE_TOKEN + TREE_PROMPT
    if task == "can":
        return IMAGE_TOKEN + CAN_PROMPT
    if task == "error_find":
        if pred is None:
            raise ValueError("`pred` is required for the error_find prompt")
        return IMAGE_TOKEN + ERROR_FIND_PROMPT.format(pred=pred)
    if task == "error_fix":
        if marked is None:
            raise ValueError("`marked` is required for the error_fix prompt")
        return IMAGE_TOKEN + ERROR_FIX_PROMPT.format(marked=marked)
    raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
