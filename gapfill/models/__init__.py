"""Neural network modules for the learned fillers (plain PyTorch, imported on demand).

``import gapfill.models`` imports torch; :mod:`gapfill.methods.gan` imports it
only when a GAN is built.
"""

from gapfill.models.frame_discriminator import FrameDiscriminator, FrameDiscriminatorConfig
from gapfill.models.generator import Generator, GeneratorConfig
from gapfill.models.sequence_discriminator import (
    SequenceDiscriminator,
    SequenceDiscriminatorConfig,
)

__all__ = [
    "FrameDiscriminator",
    "FrameDiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "SequenceDiscriminator",
    "SequenceDiscriminatorConfig",
]
