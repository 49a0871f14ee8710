"""Supervised fine-tuning with Tunix's PeftTrainer: inputs, loss, optimizer, the training run."""
