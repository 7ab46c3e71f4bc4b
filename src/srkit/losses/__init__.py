"""Loss terms. Importing this package registers every built-in term type."""

from srkit.losses import adversarial, colour, gradient, lr_feature, perceptual, pixel  # noqa: F401
