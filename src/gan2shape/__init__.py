"""gan2shape: unsupervised 3D shape reconstruction from 2D StyleGAN2s, in pure PyTorch."""

__version__ = "0.1.0"
