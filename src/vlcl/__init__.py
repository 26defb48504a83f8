"""vlcl: continual learning of CLIP-style vision-language models."""

__version__ = "0.1.0"
