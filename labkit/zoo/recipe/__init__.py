"""The SD1-style demo's recipe: its images and captions, tokenizer, model configs and training."""
