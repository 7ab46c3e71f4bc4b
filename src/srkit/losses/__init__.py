"""Loss terms. Importing this package registers every built-in term type."""

from srkit.losses import adversarial, artifacts, gradient, lr_feature, perceptual, pixel  # noqa: F401
