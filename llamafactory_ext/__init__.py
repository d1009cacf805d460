"""LLaMA-Factory plug-in: Uni-MuMER / UniFER dataset builders, validation and dataset_info registration."""
