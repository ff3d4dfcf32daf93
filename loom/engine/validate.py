"""Validation of an API prompt against the node declarations in the registry.

Produces a :class:`ValidatedPrompt` the executor can run without re-checking anything, or
raises :class:`PromptError` in ComfyUI's shape. A prompt with any invalid output is rejected
whole (ComfyUI runs the valid outputs and drops the rest; a half-run graph surprises users).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.engine.allocation import check_allocations
from loom.graph.errors import NodeError, PromptError
from loom.graph.prompt import LinkRef, as_link, parse_prompt
from loom.nodeapi.guard import failure_text, reraise_if_fatal
from loom.nodeapi.inputs import Hidden, InputError
from loom.nodeapi.node import Node
from loom.nodeapi.registry import NodeRegistry


class ValidatorUnavailable(RuntimeError):
    """A node's validator could not run because of the server's setup (a failed import): a
    server error, never reported as the user's invalid prompt."""


@dataclass
class NodeSpec:
    """One node, checked: its class, coerced constants and links by input name."""

    node_id: str
    class_type: str
    cls: type[Node]
    consts: dict[str, Any] = field(default_factory=dict)
    links: dict[str, LinkRef] = field(default_factory=dict)


@dataclass
class ValidatedPrompt:
    nodes: dict[str, NodeSpec]
    outputs: list[str]  # output node ids to execute, in prompt order
    raw: dict[str, dict]  # the prompt as sent (for PNG metadata and history)


def validate_prompt(data: Any, registry: NodeRegistry, ctx: Any = None,
                    partial_outputs: list[str] | None = None) -> ValidatedPrompt:
    """Check a prompt. ``partial_outputs`` restricts execution to those output nodes."""
    prompt = parse_prompt(data)

    for node_id, node in prompt.items():
        if node["class_type"] not in registry:
            raise PromptError("invalid_prompt",
                              f"Cannot execute because node {node['class_type']} does not exist",
                              _missing_class_hint(node["class_type"], registry),
                              extra_info={"node_id": node_id, "class_type": node["class_type"]})

    if partial_outputs:
        missing = [str(o) for o in partial_outputs if str(o) not in prompt]
        if missing:
            raise PromptError("invalid_prompt", "Invalid partial execution targets",
                              f"node(s) {', '.join(missing)} are not in the prompt")
        outputs = [str(o) for o in partial_outputs]
    else:
        outputs = [nid for nid, n in prompt.items()
                   if registry.get(n["class_type"]).output_node]
    if not outputs:
        raise PromptError("prompt_no_outputs", "Prompt has no outputs",
                          "add an output node such as SaveImage or PreviewImage")

    checker = _Checker(prompt, registry, ctx)
    node_errors: dict[str, dict] = {}
    for out in outputs:
        for bad in checker.failing_nodes(out):
            entry = node_errors.setdefault(bad, {
                "errors": [e.to_json() for e in checker.errors[bad]],
                "dependent_outputs": [],
                "class_type": prompt[bad]["class_type"],
            })
            entry["dependent_outputs"].append(out)
    if node_errors:
        first_id, first = next(iter(node_errors.items()))
        first_msg = first["errors"][0]["message"] if first["errors"] else ""
        raise PromptError(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation",
            f"{first['class_type']} (node {first_id}): {first_msg}"
            + (f" (and {len(node_errors) - 1} more node(s))" if len(node_errors) > 1 else ""),
            node_errors=node_errors)
    if over := check_allocations(checker.specs, outputs, ctx):
        node_id, error = next(iter(over.items()))
        raise PromptError(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation",
            f"{prompt[node_id]['class_type']} (node {node_id}): {error.message}",
            node_errors={node_id: {"errors": [error.to_json()], "class_type":
                                   prompt[node_id]["class_type"], "dependent_outputs": [
                                       out for out in outputs
                                       if node_id in _upstream(checker.specs, out)]}})
    return ValidatedPrompt(nodes=checker.specs, outputs=outputs, raw=prompt)


def _upstream(specs: dict[str, NodeSpec], root: str) -> set[str]:
    seen, stack = set(), [root]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in specs:
            continue
        seen.add(node_id)
        stack.extend(link.node_id for link in specs[node_id].links.values())
    return seen


class _Checker:
    """Checks nodes once each, following links upstream, and finds cycles."""

    def __init__(self, prompt: dict[str, dict], registry: NodeRegistry, ctx: Any):
        self.prompt = prompt
        self.registry = registry
        self.ctx = ctx
        self.specs: dict[str, NodeSpec] = {}
        self.errors: dict[str, list[NodeError]] = {}
        self._failing_below: dict[str, set[str]] = {}
        # Upstream nodes of each node through every link whose source exists, valid or not, so
        # a node behind a mistyped link is still checked and reported.
        self._deps: dict[str, list[tuple[str, str]]] = {}

    def failing_nodes(self, root: str) -> set[str]:
        """Ids of the nodes at or upstream of ``root`` that have errors (iterative DFS)."""
        if root in self._failing_below:
            return self._failing_below[root]
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done (per walk from a root)
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node_id, children_done = stack.pop()
            if children_done:
                state[node_id] = 2
                bad = {node_id} if self.errors[node_id] else set()
                for _, dep in self._deps[node_id]:
                    bad |= self._failing_below.get(dep, set())
                self._failing_below[node_id] = bad
                continue
            if node_id in self._failing_below or state.get(node_id) == 2:
                continue
            state[node_id] = 1
            self._check_node(node_id)
            stack.append((node_id, True))
            for name, dep in self._deps[node_id]:
                if state.get(dep) == 1:
                    self.errors[node_id].append(NodeError(
                        "dependency_cycle",
                        f"Input '{name}' is part of a cycle: node {dep} depends on this "
                        "node's own output. Remove one of the links in the loop.",
                        name, {"input_name": name, "linked_node": dep}))
                    continue
                if dep not in self._failing_below:
                    stack.append((dep, False))
        return self._failing_below[root]

    def _check_node(self, node_id: str) -> None:
        node = self.prompt[node_id]
        cls = self.registry.get(node["class_type"])
        spec = NodeSpec(node_id, node["class_type"], cls)
        errors: list[NodeError] = []
        given = node["inputs"]
        for name, inp in cls.inputs.items():
            if isinstance(inp, Hidden):
                continue
            if name not in given or given[name] is None:
                if not inp.optional:
                    errors.append(NodeError(
                        "required_input_missing", f"Required input '{name}' is missing"
                        + (f": connect a {inp.type} output to it" if not inp.is_widget else ""),
                        name, {"input_name": name}))
                continue
            value = given[name]
            link = as_link(value)
            if link is not None:
                err = self._check_link(name, inp, link)
                if err:
                    errors.append(err)
                else:
                    spec.links[name] = link
                continue
            try:
                spec.consts[name] = inp.coerce(value, self.ctx)
            except InputError as e:
                errors.append(NodeError(e.type, e.message, name,
                                        {"input_name": name, "input_config": _config(inp, self.ctx)
                                         if e.type != "value_not_in_list" else None, **e.extra}))
            except BaseException as e:  # a plugin's own input type
                reraise_if_fatal(e)
                errors.append(NodeError("invalid_input", f"'{name}' could not be checked: "
                                        f"{failure_text(e)}", name, {"input_name": name}))
        if not errors:
            try:
                message = cls.validate_inputs(self.ctx, **spec.consts)
            except ImportError as e:  # the server's installation, not the prompt, is at fault
                raise ValidatorUnavailable(f"{spec.class_type} cannot be validated: a library it "
                                           f"needs failed to import ({e}); see the server log") from e
            except BaseException as e:  # even sys.exit(): a plugin must not end the server
                reraise_if_fatal(e)
                message = failure_text(e)
            if message:
                errors.append(NodeError("custom_validation_failed", str(message), "", {}))
        self.specs[node_id] = spec
        self.errors[node_id] = errors
        self._deps[node_id] = [(name, link.node_id) for name, value in given.items()
                               if (link := as_link(value)) is not None and link.node_id in self.prompt]

    def _check_link(self, name: str, inp, link: LinkRef) -> NodeError | None:
        source = self.prompt.get(link.node_id)
        if source is None:
            return NodeError("bad_linked_input",
                             f"Input '{name}' is linked to node {link.node_id}, which is not in the "
                             "prompt", name, {"input_name": name, "received_value": [link.node_id,
                                                                                     link.slot]})
        source_cls = self.registry.get(source["class_type"])
        if not 0 <= link.slot < len(source_cls.outputs):
            return NodeError("bad_linked_input",
                             f"Input '{name}' is linked to output {link.slot} of "
                             f"{source['class_type']} (node {link.node_id}), which has "
                             f"{len(source_cls.outputs)} output(s)", name, {"input_name": name})
        out_type = source_cls.outputs[link.slot].type
        if not inp.accepts_type(out_type):
            return NodeError("return_type_mismatch",
                             f"Input '{name}' takes {inp.type} but is linked to a {out_type} output "
                             f"of {source['class_type']} (node {link.node_id})", name,
                             {"input_name": name, "received_type": out_type,
                              "linked_node": [link.node_id, link.slot]})
        return None


def _config(inp, ctx: Any) -> list | None:
    try:
        return inp.describe(ctx)
    except BaseException as e:
        reraise_if_fatal(e)
        return None


def _missing_class_hint(class_type: str, registry: NodeRegistry) -> str:
    failed = [p for p in registry.packs.values() if p.error]
    hint = (f"no loaded node pack provides '{class_type}'. If it comes from a plugin, install it "
            "in custom_nodes/ and restart Loom")
    if failed:
        hint += "; these packs failed to load: " + ", ".join(p.name for p in failed)
    return hint
