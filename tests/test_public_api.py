"""The public surface is what ``__all__`` says, and every public name is documented."""

from __future__ import annotations

import inspect

import aiows


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


def test_public_names_have_docstrings() -> None:
    for name in aiows.__all__:
        value = getattr(aiows, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
