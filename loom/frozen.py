"""Read-only dict and list for values the output cache shares between nodes and runs.

A node's output may be the input of many nodes, now and in later runs (the cache hands out the
same object). A node that changed its input in place would change what every other consumer
sees. CONDITIONING values and a MODEL's options are therefore sealed: changing them raises a
``TypeError`` that says to copy first (``dict(d)``, ``list(c)``, ``d.copy()``), which is what
nodes do to derive a new value (copy on write). Copies are plain, mutable dicts and lists.
"""

from __future__ import annotations

from typing import Any

_HINT = ("is shared with other nodes through the output cache and cannot be changed in place: "
         "copy it first (dict(value) / list(value)) and change the copy")


def _refuse(self, *args, **kwargs):
    raise TypeError(f"this {type(self).__name__.removeprefix('Frozen').lower()} {_HINT}")


class FrozenDict(dict):
    """A dict that refuses changes; ``copy()`` and ``dict(d)`` give a plain dict."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def copy(self) -> dict:
        return dict(self)

    def __reduce__(self):
        return (type(self), (dict(self),))


class FrozenList(list):
    """A list that refuses changes; ``copy()``, ``list(c)`` and ``c + other`` give plain lists."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = remove = pop = clear = _refuse
    sort = reverse = __iadd__ = __imul__ = _refuse

    def copy(self) -> list:
        return list(self)

    def __reduce__(self):
        return (type(self), (list(self),))


def freeze(value: Any) -> Any:
    """``value`` with every dict and list in it (recursively) sealed; other objects as they
    are (tensors, tuples, model objects)."""
    if isinstance(value, FrozenDict | FrozenList):
        return value
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    return value
