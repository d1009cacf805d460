"""``unitune infer``: one inference runner for HMER and FER, with a vLLM and a transformers backend.

Both backends consume the :class:`~evaluators.inference.prompts.PreparedRequest` objects built by
:mod:`evaluators.inference.prompts`; nothing about prompts, images or chat templates is backend-specific.
"""
