"""Text: Gemma's chat template, the recipes that render and parse the work, the chat format later
stages read back, injection checks, the tokenizer, the format stage's dataset writer and the packing
of token rows."""
