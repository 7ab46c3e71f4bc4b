"""Pure network definitions (torch only): generators, discriminators, feature extractors.

Importing this package registers every network with :mod:`srkit.nets.registry`.
"""

from srkit.nets import discriminators, rrdb, spsr, srg2, vgg  # noqa: F401  (registers)
from srkit.nets.registry import build_network, detect_network, network_names

__all__ = ["build_network", "detect_network", "network_names"]
