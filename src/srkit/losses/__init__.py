"""Loss terms. Importing this package registers every built-in term type."""

from srkit.losses import (  # noqa: F401
    adversarial,
    artifacts,
    colour,
    gradient,
    lr_feature,
    perceptual,
    pixel,
)
