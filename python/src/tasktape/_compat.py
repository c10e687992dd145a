"""Work-arounds for the libraries under the package.

`httpcore` (under `httpx`) asks which async library runs each async request
by trying `import sniffio`; when `sniffio` is not installed, that failed
import searches `sys.path` again every time (encode/httpcore#1103), which
cost the worker about 0.9 ms of CPU a task in `python/bench`. An absent
module marked `None` in `sys.modules` fails at once, and httpcore then
assumes asyncio, as it does anyway without sniffio.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["quiet_missing_sniffio"]


def quiet_missing_sniffio() -> None:
    """Makes `import sniffio` fail at once when it is not installed (and
    does nothing when it is)."""
    if "sniffio" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("sniffio") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
