"""Builds aiows's optional C accelerator; everything else is in pyproject.toml.

Without a working compiler (or with ``AIOWS_NO_EXTENSIONS=1`` at build time) the
install still succeeds, prints one line saying so, and aiows runs in pure Python.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _skip(reason: object) -> None:
    # One line on stderr: pip shows it with -v, and it is in every build log.
    print(f"aiows: C speedups not built ({reason}); using pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a build error leaves pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, a broken toolchain, ...
            _skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # a compile or link error in this one extension
            _skip(exc)


extensions = []
if not os.environ.get("AIOWS_NO_EXTENSIONS"):
    extensions.append(Extension("aiows._speedups", ["aiows/_speedups.c"], optional=True))
else:
    _skip("AIOWS_NO_EXTENSIONS is set")

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
