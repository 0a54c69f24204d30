"""Coverage feedback for atheris from chosen modules only.

``atheris.instrument_all()`` rewrites every loaded function (numpy, asyncio,
hypothesis ...) and takes about a minute; the harnesses only need feedback from
the code under test, which takes well under a second.
"""

from __future__ import annotations

import inspect
from types import FunctionType, ModuleType
from typing import Any


def _functions_of(module: ModuleType) -> list[FunctionType]:
    found: list[FunctionType] = []
    for value in vars(module).values():
        if isinstance(value, FunctionType) and value.__module__ == module.__name__:
            found.append(value)
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            for member in vars(value).values():
                target = getattr(member, "__func__", member)  # staticmethod / classmethod
                if isinstance(target, FunctionType):
                    found.append(target)
    return found


def instrument_modules(atheris: Any, modules: list[ModuleType]) -> int:
    """Instrument every function and method defined in ``modules``; returns how many."""
    functions = [f for module in modules for f in _functions_of(module)]
    for function in functions:
        atheris.instrument_func(function)
    return len(functions)
