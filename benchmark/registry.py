"""Small, loud registries (design/style.md): duplicate names raise, unknown names suggest the closest one."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from benchmark.errors import UserError

T = TypeVar("T")

TASK_ENTRY_POINT_GROUP = "clip4vla.tasks"


def closest(name: str, choices: list[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


class Registry(Generic[T]):
    """Name -> object. `register` is a decorator; `get` raises a UserError naming the closest known name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            known = sorted(self._items)
            raise UserError(f"unknown {self.kind} '{name}'{closest(name, known)} (known: {', '.join(known)})")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


TASKS: Registry = Registry("task")
register_task = TASKS.register

_loaded = False


def load_tasks() -> Registry:
    """Import the built-in task modules and every `clip4vla.tasks` entry point, once.

    A plugin that fails to import is an error, never a silently skipped task (lm-eval #635).
    """
    global _loaded
    if not _loaded:
        importlib.import_module("tasks")
        for ep in entry_points(group=TASK_ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must stop the run, with its name
                raise UserError(f"task plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc
        _loaded = True
    return TASKS
