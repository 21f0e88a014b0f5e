"""A name -> supernet-builder registry, timm style: builders register with a decorator and take a
search space. `create_model(name, space)` is the one way callers build a registered supernet.
Builders register where they are defined (`nasplat.models.zoomnet`); importing `nasplat.models`
fills the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from nasplat.errors import ConfigError

__all__ = ["create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])


def register_model(fn: _Builder) -> _Builder:
    """Register a builder `fn(space, **kwargs) -> supernet` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered supernets, sorted."""
    return sorted(_MODELS)


def create_model(name: str, space: Any, **kwargs: Any) -> nn.Module:
    """Build the registered supernet `name` for `space`. Raises ConfigError for unknown names."""
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}", key="model") from None
    return builder(space, **kwargs)
