"""The API-format prompt: ``{"<node id>": {"class_type": str, "inputs": {name: value | link}}}``.

A link is ``[source_node_id, output_slot]``. This module checks the structure only; what the
inputs mean is checked by the engine's validator against the node declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loom.graph.errors import PromptError


@dataclass(frozen=True)
class LinkRef:
    node_id: str
    slot: int


def as_link(value: Any) -> LinkRef | None:
    """``[node_id, slot]`` -> LinkRef; anything else (a constant) -> None."""
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int)
            and not isinstance(value[1], bool)):
        return LinkRef(str(value[0]), value[1])
    return None


def parse_prompt(data: Any) -> dict[str, dict]:
    """Check the shape of an API prompt; return it with string node ids."""
    if not isinstance(data, dict):
        raise PromptError("invalid_prompt", "Invalid prompt",
                          f"the prompt must be a JSON object of nodes, got {type(data).__name__}")
    if not data:
        raise PromptError("invalid_prompt", "Invalid prompt", "the prompt has no nodes")
    prompt: dict[str, dict] = {}
    for node_id, node in data.items():
        if not isinstance(node, dict):
            raise PromptError("invalid_prompt", "Invalid prompt",
                              f"node {node_id} must be an object with class_type and inputs")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise PromptError("invalid_prompt", "Invalid prompt",
                              f"node {node_id} has no class_type",
                              extra_info={"node_id": str(node_id)})
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise PromptError("invalid_prompt", "Invalid prompt",
                              f"node {node_id} ({class_type}): inputs must be an object")
        prompt[str(node_id)] = {**node, "class_type": class_type, "inputs": inputs}
    return prompt
