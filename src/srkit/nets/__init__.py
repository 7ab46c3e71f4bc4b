"""Pure network definitions (torch only): generators, discriminators, feature extractors.

Importing this package registers every network with :mod:`srkit.nets.registry`.
"""

from srkit.nets import (  # noqa: F401  (registers)
    compact,
    discriminators,
    featurenet,
    rrdb,
    spsr,
    srg2,
    switched_spsr,
    vgg,
)
from srkit.nets.registry import build_network, detect_network, network_names

__all__ = ["build_network", "detect_network", "network_names"]
