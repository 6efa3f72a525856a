"""Approximate baselines (PyTorch): VAE and IWAE with a CPA decoder and Gaussian noise.

Importing this package imports torch.
"""

from ._vae import IWAE, VAE, GaussianEncoder

__all__ = ["IWAE", "VAE", "GaussianEncoder"]
