"""Every built-in generator family; importing this package registers them all."""

from effgan.generators import effgan, efficientnet, resnet  # noqa: F401
