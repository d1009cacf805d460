"""Task knowledge shared by the data builders, the GRPO rewards and the evaluators.

Nothing here imports torch, transformers or any training engine: these are pure functions on strings.

- :mod:`evaluators.knowledge.latex` -- LaTeX tokenisation, normalisation, answer extraction, symbol counts.
- :mod:`evaluators.knowledge.answers` -- ``<think>/<answer>`` tag handling and completion text access.
- :mod:`evaluators.knowledge.fer_labels` -- FERBench label vocabularies, synonyms and dataset detection.
"""
