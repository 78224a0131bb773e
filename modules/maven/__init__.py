"""MAVEN's extra networks: the latent (z) policy and the variational discriminator."""

from modules.maven.networks import Discriminator, LatentPolicy

__all__ = ["Discriminator", "LatentPolicy"]
