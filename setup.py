"""Build hook for the one compiled module: the feed's record formatter.

Everything else about the package is in pyproject.toml. The extension is
built where its source is in the tree (the development install, the feed's
image); a package set without ``feed_container`` (a Lambda function's) has
nothing to compile. It is optional: where no C compiler is found,
installation still succeeds and the feed formats records in Python (slower;
it logs which at start, and ``tests/unit/feed/test_recordfmt.py`` fails in a
development environment without it, so ``make test`` says so).
"""

from pathlib import Path

from setuptools import Extension, setup

SOURCE = "feed_container/_recordfmt.c"

setup(
    ext_modules=[Extension("feed_container._recordfmt", sources=[SOURCE], optional=True)]
    if (Path(__file__).parent / SOURCE).exists()
    else []
)
