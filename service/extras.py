"""Optional extras: a clear message naming the extra to install, instead of a bare ImportError."""

from __future__ import annotations

from importlib.util import find_spec


class MissingExtra(ModuleNotFoundError):
    pass


def require(*modules: str, extra: str, purpose: str) -> None:
    """Raises `MissingExtra` unless every module in `modules` can be imported.

    >>> require("json", extra="none", purpose="a doctest")
    >>> require("no_such_module_here", extra="demo", purpose="the demo")
    Traceback (most recent call last):
    ...
    service.extras.MissingExtra: the demo needs no_such_module_here: pip install 'gradual[demo]'
    """
    missing = [name for name in modules if find_spec(name) is None]
    if missing:
        raise MissingExtra(f"{purpose} needs {', '.join(missing)}: pip install 'gradual[{extra}]'")
