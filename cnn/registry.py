"""Name -> constructor registries: models, datasets, optimizers and schedules are chosen by name from configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cnn.errors import ConfigError


class Registry:
    """A named table of constructors; an unknown name fails with the list of known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any] | None = None):
        """Register ``fn`` under ``name``; usable as a decorator (``@registry.register("name")``)."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = f
            return f

        return add if fn is None else add(fn)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
