"""HMER evaluation: upstream-exact ExpRate family for Uni-MuMER predictions, plus error analysis.

- :mod:`evaluators.hmer.loaders` -- reads upstream prediction JSON, LLaMA-Factory's
  ``generated_predictions.jsonl`` and unitune inference JSONL into one sample list.
- :mod:`evaluators.hmer.metrics` -- per-sample alignment and the aggregate metrics (pure functions).
- :mod:`evaluators.hmer.upstream_report` -- upstream's results-text layout, byte for byte.
- :mod:`evaluators.hmer.analysis` -- ExpRate by length/structure, token confusions, CoT consistency, plots.
- :mod:`evaluators.hmer.cli` -- ``unitune eval hmer``.
"""

from evaluators.hmer.loaders import HmerSample, load_predictions
from evaluators.hmer.metrics import HmerResult, evaluate_samples

__all__ = ["HmerResult", "HmerSample", "evaluate_samples", "load_predictions"]
