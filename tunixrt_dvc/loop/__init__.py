"""What every training loop shares (SFT in `sft`, GRPO in `rl`): the resume guard, the per-step
log, and Tunix's training hooks with nothing to do by default."""
