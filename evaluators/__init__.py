"""Evaluators for Uni-MuMER (HMER) and UniFER (FER), and the home of unitune's task knowledge.

``evaluators.knowledge`` is the one place that defines correctness (answer extraction, LaTeX
tokenisation/normalisation, FER label vocabularies). ``llamafactory_ext`` (data builders) and
``trl_grpo`` (rewards) import it, so a model is trained on exactly the function it is scored with.
"""

__version__ = "0.1.0"
