"""GAN2Shape reconstruction: factor networks, priors, losses, the three steps, the API.

``Reconstructor(gan, config).fit(image, latent) -> ReconResult``; ``result.export(dir)``.
"""

from .networks import build_networks, load_networks
from .reconstructor import OUTPUT_FILES, ReconResult, Reconstructor, is_finished
from .sequences import SequenceSpec

__all__ = ["OUTPUT_FILES", "ReconResult", "Reconstructor", "SequenceSpec", "build_networks",
           "is_finished", "load_networks"]
