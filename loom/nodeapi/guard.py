"""Containing what node code raises.

Node code (``run``, ``validate_inputs``, ``fingerprint``, COMBO choices functions, a plugin's
own input types) may raise anything, including ``BaseException`` subclasses that ``except
Exception`` lets through: ``sys.exit()`` in a plugin would end a worker thread (the queue then
stalls for good) or, during validation on the event loop, the whole server. Every place that
calls node code catches ``BaseException`` and reports it against the node, except a real Ctrl+C.
"""

from __future__ import annotations

import threading


def reraise_if_fatal(exc: BaseException) -> None:
    """Re-raise ``exc`` if it must not be contained: a ``KeyboardInterrupt`` on the main thread
    (the user pressed Ctrl+C). Worker threads never receive signals, so a KeyboardInterrupt
    there came from node code and is contained like any other failure."""
    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        raise exc


def failure_text(exc: BaseException) -> str:
    """``Type: message`` of what node code raised, for error messages."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
