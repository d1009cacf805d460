"""GRPO rewards for FER and HMER in TRL's reward-function layout, and the GRPO entry point."""
