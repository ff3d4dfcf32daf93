"""The order nodes run in: each node after the nodes its inputs link to."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any


def postorder(nodes: Mapping[str, Any], roots: Iterable[str],
              stop: Container[str] = ()) -> list[str]:
    """Ids of the nodes ``roots`` need, each after the nodes its ``links`` point to. Nodes in
    ``stop`` are not entered (their outputs are cached, so their inputs are not needed); ids not
    in ``nodes`` are skipped. Iterative, so deep graphs are fine; validation has ruled out
    cycles."""
    order: list[str] = []
    seen: set[str] = set()
    for root in roots:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node_id, expanded = stack.pop()
            if expanded:
                order.append(node_id)
                continue
            if node_id in seen or node_id in stop or node_id not in nodes:
                continue
            seen.add(node_id)
            stack.append((node_id, True))
            for link in reversed(list(nodes[node_id].links.values())):
                if link.node_id not in seen:
                    stack.append((link.node_id, False))
    return order
