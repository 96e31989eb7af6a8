"""The SDXL-style demo: its second encoder, SDXL conditioning, training and export."""
