"""FERBench evaluation: UniFER's exact protocol (``unifer``) and unitune's ``strict`` protocol.

Modules: :mod:`~evaluators.fer.unifer_protocol` and :mod:`~evaluators.fer.strict_protocol` (label
extraction), :mod:`~evaluators.fer.metrics` (scikit-learn metrics as dicts), :mod:`~evaluators.fer.evaluate`
(loading, validation, per-file and pooled scoring), :mod:`~evaluators.fer.report` (JSON schema, tables),
:mod:`~evaluators.fer.plots` (confusion-matrix PNGs) and :mod:`~evaluators.fer.cli` (``unitune eval fer``).
"""
