"""Every built-in generator family; importing this package registers them all."""

from effgan.generators import resnet  # noqa: F401
