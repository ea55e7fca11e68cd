"""The public surface is what ``__all__`` says, and every public name is documented.

Public modules: ``aiows`` itself and the submodules a user imports by name
(``aiows.sync``, ``aiows.compat``, ``aiows.testing``, ``aiows.backends``). Each has an
explicit, unique, complete ``__all__``; every name in it, and every public method and
property of every class in it, has a docstring; every coroutine among them says whether
it is safe to cancel.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import aiows

PUBLIC_MODULES = [
    "aiows",
    "aiows.sync",
    "aiows.compat",
    "aiows.testing",
    "aiows.backends",
    "aiows.resume",
    "aiows.asgi",
    "aiows.uvicorn",
]
#: Dunder methods a user calls through syntax (``async with``, ``await``, ``async for``).
PROTOCOL_METHODS = frozenset({"__aenter__", "__await__", "__aiter__", "__anext__", "__enter__"})


def public_module(name: str) -> ModuleType:
    if name == "aiows.backends" and not (Path(aiows.__file__).parent / "backends").exists():
        pytest.skip("aiows.backends is not there yet")
    return importlib.import_module(name)


def test_all_is_unique_and_complete() -> None:
    assert len(aiows.__all__) == len(set(aiows.__all__))
    for name in aiows.__all__:
        assert hasattr(aiows, name), name
    exported = {
        name
        for name, value in vars(aiows).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert exported <= set(aiows.__all__), exported - set(aiows.__all__)


@pytest.mark.parametrize("name", PUBLIC_MODULES[1:])
def test_public_submodules_have_a_unique_complete_all(name: str) -> None:
    module = public_module(name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{name} has no __all__"
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    for attribute in names:
        assert hasattr(module, attribute), f"{name}.__all__ names a missing {attribute}"
    defined_here = {
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert defined_here <= set(names), f"{name}: not in __all__: {defined_here - set(names)}"


def public_members(name: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(qualified name, object)`` for every public function, class and member."""
    module = public_module(name)
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        yield f"{name}.{attribute}", value
        if not inspect.isclass(value):
            continue
        for member_name, member in vars(value).items():
            if member_name.startswith("_") and member_name not in PROTOCOL_METHODS:
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, property):
                yield f"{name}.{attribute}.{member_name}", member


def docstring(value: Any) -> str:
    if isinstance(value, property):
        return value.__doc__ or ""
    return inspect.getdoc(value) or ""


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_names_and_members_have_docstrings(name: str) -> None:
    missing = [
        qualified
        for qualified, value in public_members(name)
        if not docstring(value) and not qualified.endswith(tuple(PROTOCOL_METHODS))
    ]
    assert not missing, f"no docstring: {missing}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_coroutines_say_whether_they_are_safe_to_cancel(name: str) -> None:
    silent = [
        qualified
        for qualified, value in public_members(name)
        if inspect.iscoroutinefunction(value)
        and not qualified.endswith(tuple(PROTOCOL_METHODS))
        and "cancel" not in docstring(value).lower()
    ]
    assert not silent, f"docstring does not say whether it is safe to cancel: {silent}"


def test_the_package_is_typed() -> None:
    assert (Path(aiows.__file__).parent / "py.typed").exists()
