"""Every built-in generator family; importing this package registers them all."""

from effgan.generators import efficientnet, resnet  # noqa: F401
