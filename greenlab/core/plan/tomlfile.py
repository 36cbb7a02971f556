"""The TOML parser: the standard library's tomllib from Python 3.11, tomli (the same parser) on 3.10.

Every module that reads TOML imports `tomllib` from here, so the fallback lives in one place.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["tomllib"]
