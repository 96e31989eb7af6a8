"""labkit: the Stable Diffusion model lab."""
