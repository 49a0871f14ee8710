"""What every training loop shares (SFT in `sft`, GRPO in `rl`): the resume guard, the per-step
log, Tunix's training hooks with nothing to do by default, and progress on stderr (which the
eval's generation shows too)."""
