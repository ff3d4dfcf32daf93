"""The node API: what built-in nodes and plugins import to declare nodes.

See ``custom_nodes/example_pack`` for a documented template.
"""

from loom.nodeapi.inputs import (
    MAX_RESOLUTION,
    SEED_MAX,
    Boolean,
    Combo,
    Float,
    Hidden,
    Input,
    InputError,
    Int,
    Link,
    ModelFile,
    String,
    fraction,
    pixels,
)
from loom.nodeapi.node import (
    ALWAYS_RUN,
    Allocation,
    Interrupted,
    ModelUse,
    Node,
    NodeResult,
    Output,
    RunContext,
)
from loom.nodeapi.registry import NodeRegistry, PackInfo

__all__ = [
    "ALWAYS_RUN", "MAX_RESOLUTION", "SEED_MAX", "Allocation", "Boolean", "Combo", "Float",
    "Hidden", "Input", "InputError", "Int",
    "Interrupted", "Link", "ModelFile", "ModelUse", "Node", "NodeRegistry", "NodeResult", "Output",
    "PackInfo", "RunContext", "String", "fraction", "pixels",
]
