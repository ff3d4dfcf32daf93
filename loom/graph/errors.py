"""Validation errors in ComfyUI's shape: ``{"error": {...}, "node_errors": {...}}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeError:
    """One problem with one input (or the node as a whole) of one node."""

    type: str
    message: str
    details: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": self.extra_info}


class PromptError(Exception):
    """A prompt (or a workflow being converted) was rejected as a whole.

    ``node_errors`` maps node id -> {"errors": [...], "dependent_outputs": [...],
    "class_type": ...}: the ``node_errors`` of ComfyUI's ``POST /prompt`` response.
    """

    def __init__(self, type: str, message: str, details: str = "",
                 node_errors: dict[str, dict] | None = None, extra_info: dict | None = None):
        super().__init__(message + (f": {details}" if details else ""))
        self.type = type
        self.message = message
        self.details = details
        self.node_errors = node_errors or {}
        self.extra_info = extra_info or {}

    def to_json(self) -> dict:
        return {
            "error": {"type": self.type, "message": self.message, "details": self.details,
                      "extra_info": self.extra_info},
            "node_errors": self.node_errors,
        }
