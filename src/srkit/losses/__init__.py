"""Loss terms. Importing this package registers every built-in term type."""

from srkit.losses import adversarial, gradient, perceptual, pixel  # noqa: F401
