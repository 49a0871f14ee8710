"""Reinforcement learning after SFT: GRPO on the training prompts with the task's reward."""
