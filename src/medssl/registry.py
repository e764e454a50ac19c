"""A small explicit registry (after timm's model registry): ``@REG.register("name")`` on a factory.

Registration happens by importing the defining module; each package's ``__init__`` lists those imports
explicitly, so adding a backbone, decoder or SSL method is one file plus one import line.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, Tuple, TypeVar

from .errors import InputError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short, stable names (stored in plans and catalogs) to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a duplicate name is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The factory called ``name``; an unknown name raises `InputError` with the closest names."""
        try:
            return self._items[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._items)} "
                f"Known: {', '.join(sorted(self._items))}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> List[str]:
        return sorted(self._items)

    def items(self) -> List[Tuple[str, T]]:
        """``(name, factory)`` in registration order."""
        return list(self._items.items())
