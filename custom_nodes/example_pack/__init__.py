"""Example node pack: the template for Loom plugin authors (see README.md beside this file).

Loom imports this package from ``custom_nodes/`` and registers every class in ``NODES``. Keep
this file small and free of heavy imports: it runs at server start, and an exception here only
disables this pack (the error and its traceback are shown in the log and by the server).
"""

from .image_nodes import BrightnessContrast
from .text_nodes import JoinStrings, LoadTextFile

NODES = [BrightnessContrast, JoinStrings, LoadTextFile]

# Optional: your release number, for your users and bug reports.
__version__ = "1.0.0"
