"""Built-in synthetic data for ``unitune demo``: rendered formulas (HMER) and drawn faces (FER).

They exist so the whole pipeline runs offline on any machine; they are not benchmarks.
"""
