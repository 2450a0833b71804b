"""The generator registry, in the style of timm: register by name, build by name.

Adding a variant touches one file: decorate its builder with `@register_generator`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras


class UnknownGeneratorError(KeyError):
    """A generator name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class ImageSizeError(ValueError):
    """An image size the generator cannot take."""


@dataclass(frozen=True)
class GeneratorEntry:
    name: str
    builder: Callable[..., keras.Model]
    description: str
    source: str
    family: str
    size_multiple: int
    thesis_method: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, GeneratorEntry] = {}


def register_generator(
    name: str,
    *,
    description: str,
    source: str,
    family: str,
    size_multiple: int = 4,
    thesis_method: str | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register `builder(image_size, **options) -> keras.Model` under `name`.

    `defaults` are options bound for this name (e.g. `phi=2` for `effgan_b2`), so one
    builder can serve several registered variants.
    """

    def decorate(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ValueError(f"generator {name!r} is already registered")
        _REGISTRY[name] = GeneratorEntry(
            name, builder, description, source, family, size_multiple, thesis_method, defaults
        )
        return builder

    return decorate


def _ensure_loaded() -> None:
    # Importing the package registers every built-in family.
    import effgan.generators  # noqa: F401


def list_generators() -> list[str]:
    """Names of every registered generator, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def generator_entry(name: str) -> GeneratorEntry:
    """The registry entry for `name`; an unknown name lists the known ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownGeneratorError(f"unknown generator {name!r}; known: {known}") from None


def check_image_size(name: str, image_size: int) -> None:
    """Raise ImageSizeError unless `image_size` suits generator `name`."""
    entry = generator_entry(name)
    m = entry.size_multiple
    if not isinstance(image_size, int) or image_size <= 0 or image_size % m:
        raise ImageSizeError(
            f"generator {name!r} needs an image size that is a positive multiple of {m} "
            f"(got {image_size!r}), e.g. {m * max(1, round(64 / m))}"
        )


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """The builder's full option set: its signature defaults, the entry's, then the caller's."""
    entry = generator_entry(name)
    params = inspect.signature(entry.builder).parameters
    resolved = {
        k: p.default
        for k, p in params.items()
        if k != "image_size" and p.default is not inspect.Parameter.empty
    }
    unknown = set(options) - set(resolved)
    if unknown:
        raise TypeError(
            f"generator {name!r} has no option(s) {sorted(unknown)}; "
            f"it takes: {', '.join(sorted(resolved)) or 'none'}"
        )
    resolved.update(entry.defaults)
    resolved.update(options)
    return resolved


def build_generator(name: str, image_size: int = 256, **options: Any) -> keras.Model:
    """Build generator `name` for square `image_size` inputs.

    The resolved options (e.g. which weights were loaded) are kept on the model as
    `model.effgan_config` so every run can say exactly what it trained.
    """
    entry = generator_entry(name)
    check_image_size(name, image_size)
    resolved = resolve_options(name, **options)
    model = entry.builder(image_size=image_size, **resolved)
    config = {"name": name, "image_size": image_size, **resolved}
    object.__setattr__(model, "effgan_config", config)
    return model
