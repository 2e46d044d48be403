"""gan_inversion_bench: a modular benchmarking toolkit for GAN inversion.

Conventions: images are RGB, NCHW, float in [-1, 1]; latents are ``[B, latent_dim]``.
PSNR is per image on [0, 1] (data range 1), then averaged; LPIPS is AlexNet v0.1 on [-1, 1].

>>> from gan_inversion_bench import GENERATORS, METHODS
>>> G = GENERATORS.create("dcgan-digiface64")
>>> method = METHODS.get("single-code").from_profile("quick")
>>> result = method.invert(G, targets, seeds=[0, 1])
"""
__version__ = "0.1.0"

from .registry import GENERATORS, METHODS, Registry, UnknownNameError

__all__ = ["GENERATORS", "METHODS", "Registry", "UnknownNameError", "__version__"]
