"""svdbatch: batch image-to-video with Stable Video Diffusion on Ray."""

__version__ = "0.1.0"
