"""Convert a UI workflow (litegraph "version 0.4" JSON, what the editor saves) to an API prompt.

The editor saves what it draws: ``nodes`` with their sockets and widget values, ``links`` between
them, plus nodes that only exist in the editor (reroutes, primitive nodes, notes). The engine runs
an API prompt: ``{"<id>": {"class_type", "inputs": {name: constant | [origin_id, slot]}}}``.
Converting on the server lets a saved workflow file, or a PNG that carries one, run without a
browser.

What the conversion does, in short:

* widget values are matched to the node's widget inputs in declaration order (``input_order``
  from ``/object_info``), skipping the extra values editors save (see "Widget values" below);
  ``widgets_values_named`` (newer editors save it next to the list) fills what the list lacks;
* a link wins over the widget value of an input that was converted to a socket;
* reroutes (and KJNodes-style Set/Get pairs) are followed upstream; a primitive node becomes the
  constant it holds; bypassed nodes (mode 4) pass their inputs through to their outputs by type;
  muted nodes (mode 2) are dropped, and a required input they fed is reported as an error;
* notes and other editor-only nodes that are not wired to anything are ignored; a wired node of an
  unknown type is an error that names it (usually a node pack that is not installed);
* subgraphs (``definitions.subgraphs``, newer editors) are flattened; their nodes get the ids
  ``"<subgraph node id>:<inner id>"``, as in ComfyUI.

Widget values: the editor saves one value per widget it draws, and it draws more widgets than
the node declares. Every form ComfyUI's front ends have written over their versions is read:

* after a widget with "control after generate" (an INT named seed/noise_seed unless the input
  says ``control_after_generate: false``; any INT, FLOAT or COMBO that asks for it) comes the
  control value: a word (``fixed``, ``increment``, ``decrement``, ``randomize``, and for combos
  ``increment-wrap``), or ``true``/``false`` (the old "random seed" toggle, still in the default
  graph of front ends 1.x), or nothing at all (files written by other tools);
* after a combo's control value comes its ``control_filter_list`` text;
* after the required widgets of a node with an upload button comes the button's value;
* older front ends saved a value for ``forceInput`` inputs too.

Which of these a list holds is decided by fitting the whole list: the reading whose values fit
their widgets' types best (then the one that uses every value, then the one that skips extras)
wins. So ``[seed, true, 20, 8, "euler", …]`` gives steps 20 whatever the extra looks like.

Pure Python: no torch, no HTTP. ``node_defs`` is ``/object_info``-shaped data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.graph.errors import NodeError, PromptError

# litegraph node modes
MODE_ALWAYS = 0
MODE_NEVER = 2  # "muted" in the editor
MODE_BYPASS = 4

# Values the editor stores after a widget with "control after generate" (increment-wrap: combos).
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
# Values the editor stores for an upload button (the button widget's own value).
UPLOAD_VALUES = frozenset({"image", "video", "audio", "upload"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# INT inputs the editor gives a control value even when the node does not ask for one.
SEED_NAMES = frozenset({"seed", "noise_seed"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

REROUTE_TYPES = frozenset({"Reroute", "Reroute (rgthree)"})
PRIMITIVE_TYPE = "PrimitiveNode"
SET_TYPE, GET_TYPE = "SetNode", "GetNode"  # KJNodes' editor-only "set/get variable" pair
# Editor-only nodes that never reach the prompt. Types not listed here and unknown to the
# registry are ignored too, as long as nothing is wired to them.
VIRTUAL_TYPES = frozenset({
    "Note", "MarkdownNote", PRIMITIVE_TYPE, SET_TYPE, GET_TYPE, *REROUTE_TYPES,
    "Label (rgthree)", "Bookmark (rgthree)", "Fast Groups Muter (rgthree)",
    "Fast Groups Bypasser (rgthree)", "Fast Muter (rgthree)", "Fast Bypasser (rgthree)",
    "Mute / Bypass Repeater (rgthree)", "Note Plus (mtb)",
})

# Ids of the boundary pseudo-nodes inside a subgraph definition.
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20
MAX_SUBGRAPH_DEPTH = 32


def convert_workflow(workflow: Any, node_defs: dict[str, dict]) -> dict[str, dict]:
    """The API prompt for a UI workflow. Raises :class:`PromptError` ("invalid_workflow")."""
    try:
        return _Converter(workflow, node_defs).convert()
    except RecursionError:  # a chain of thousands of reroutes: a crafted file, not a drawing
        raise _error("Invalid workflow: its links are chained too deep to follow") from None


def is_ui_workflow(data: Any) -> bool:
    """Whether ``data`` looks like a UI workflow (rather than an API prompt)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def looks_like_api_prompt(data: Any) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def _error(message: str, details: str = "", **extra: Any) -> PromptError:
    return PromptError("invalid_workflow", message, details, extra_info=extra)


# -- the parsed graph -----------------------------------------------------------------------


@dataclass
class _Link:
    origin_id: str  # local to the link's graph (a subgraph has its own ids)
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclass
class _Node:
    id: str  # the prompt id: "7", or "12:7" for node 7 inside subgraph node 12
    scope: str  # "" at the top level, "12:" inside subgraph node 12
    type: str
    mode: int  # effective: a muted/bypassed subgraph mode applies to what is inside
    title: str | None
    inputs: list[dict]
    outputs: list[dict]
    widgets_values: Any
    definition: dict | None = None  # the subgraph definition when this node is a subgraph
    named_values: Any = None  # ``widgets_values_named``: newer editors save values by name too

    @property
    def label(self) -> str:
        return f"node {self.id} ({self.type})"


@dataclass
class _Resolved:
    """Where an input's value comes from once editor-only nodes are looked through."""

    kind: str  # "link" | "const" | "dropped"
    node_id: str = ""
    slot: int = 0
    value: Any = None
    reason: str = ""  # for "dropped": why, naming the node responsible
    culprit: _Node | None = None  # the muted/bypassed node that cut the link


@dataclass
class _WidgetSpec:
    name: str
    optional: bool
    kind: str = "*"  # INT, FLOAT, STRING, BOOLEAN, COMBO: to judge whether a saved value fits
    choices: tuple = ()  # a combo's options
    control: bool = False  # followed by a "control after generate" value
    filter: bool = False  # …and then a control_filter_list text (combos)
    upload: bool = False  # a pseudo widget: the upload button after an image combo
    phantom: bool = False  # a forceInput input: older editors saved a value for it
    has_default: bool = False
    default: Any = None


@dataclass
class _Converter:
    workflow: Any
    node_defs: dict[str, dict]
    nodes: dict[str, _Node] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    links: dict[tuple[str, str], _Link] = field(default_factory=dict)
    errors: dict[str, dict] = field(default_factory=dict)
    _widget_cache: dict[str, list[_WidgetSpec]] = field(default_factory=dict)
    _linked: set[tuple[str, str]] | None = None  # (scope, node id) of every link end

    # -- entry ------------------------------------------------------------------------------

    def convert(self) -> dict[str, dict]:
        wf = self.workflow
        if not isinstance(wf, dict):
            raise _error(f"Invalid workflow: it must be a JSON object, got {type(wf).__name__}")
        if not isinstance(wf.get("nodes"), list):
            if looks_like_api_prompt(wf):
                raise _error("This is an API-format prompt, not a UI workflow",
                             "queue it as it is: POST it as {\"prompt\": ...} to /prompt")
            raise _error("Invalid workflow: a UI workflow has a 'nodes' list (and a 'links' list)")
        definitions = _subgraph_definitions(wf)
        self._add_graph(wf, "", definitions, depth=0, parent_mode=MODE_ALWAYS)
        prompt: dict[str, dict] = {}
        for node_id in self.order:
            node = self.nodes[node_id]
            entry = self._convert_node(node)
            if entry is not None:
                prompt[node_id] = entry
        if self.errors:
            messages = [e["errors"][0]["message"] for e in self.errors.values()]
            raise PromptError(
                "invalid_workflow", messages[0],
                "; ".join(messages[1:]) if len(messages) > 1 else "",
                node_errors=self.errors)
        if not prompt:
            raise _error("The workflow has no nodes to run",
                         "every node is muted, bypassed or editor-only (notes, reroutes, primitives)")
        return prompt

    def _fail(self, node: _Node, message: str, input_name: str = "", **extra: Any) -> None:
        entry = self.errors.setdefault(node.id, {"errors": [], "dependent_outputs": [],
                                                 "class_type": node.type})
        info = {"input_name": input_name, **extra} if input_name else extra
        entry["errors"].append(NodeError("invalid_workflow", message, input_name, info).to_json())

    # -- parsing ----------------------------------------------------------------------------

    def _add_graph(self, graph: dict, scope: str, definitions: dict[str, dict], depth: int,
                   parent_mode: int) -> None:
        if depth > MAX_SUBGRAPH_DEPTH:
            raise _error(f"Invalid workflow: subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep "
                         "(a subgraph that contains itself?)")
        where = f" in subgraph node {scope[:-1]}" if scope else ""
        raw_links = graph.get("links")
        raw_links = [] if raw_links is None else raw_links
        if not isinstance(raw_links, list):
            raise _error(f"Invalid workflow: 'links'{where} must be a list")
        for raw in raw_links:
            link_id, link = _parse_link(raw, where)
            if link_id is not None:
                self.links[(scope, link_id)] = link

        raw_nodes = graph.get("nodes")
        if not isinstance(raw_nodes, list):
            raise _error(f"Invalid workflow: 'nodes'{where} must be a list")
        parsed: list[tuple[tuple, _Node, dict]] = []
        seen_ids: set[str] = set()
        for index, raw in enumerate(raw_nodes):
            if not isinstance(raw, dict):
                raise _error(f"Invalid workflow: node #{index}{where} is not an object")
            node_id, node_type = raw.get("id"), raw.get("type")
            if isinstance(node_id, bool) or not isinstance(node_id, (int, str)) or node_id == "":
                raise _error(f"Invalid workflow: node #{index}{where} has no valid 'id'")
            if not isinstance(node_type, str) or not node_type:
                raise _error(f"Invalid workflow: node {node_id}{where} has no 'type'")
            mode = raw.get("mode", MODE_ALWAYS)
            mode = mode if isinstance(mode, int) and not isinstance(mode, bool) else MODE_ALWAYS
            if parent_mode in (MODE_NEVER, MODE_BYPASS):
                mode = parent_mode
            for key in ("inputs", "outputs"):
                if raw.get(key) is not None and not isinstance(raw[key], list):
                    raise _error(f"Invalid workflow: '{key}' of node {node_id}{where} must be a list")
            title = raw.get("title")
            node = _Node(
                id=scope + str(node_id), scope=scope, type=node_type, mode=mode,
                title=title if isinstance(title, str) and title else None,
                inputs=[i for i in (raw.get("inputs") or []) if isinstance(i, dict)],
                outputs=[o for o in (raw.get("outputs") or []) if isinstance(o, dict)],
                widgets_values=raw.get("widgets_values"),
                definition=definitions.get(node_type),
                named_values=raw.get("widgets_values_named"))
            if node.id in self.nodes or node.id in seen_ids:
                raise _error(f"Invalid workflow: two nodes have the id {node_id}{where}")
            seen_ids.add(node.id)
            order = raw.get("order")
            key = (order if isinstance(order, int) and not isinstance(order, bool) else 1 << 30, index)
            parsed.append((key, node, raw))
        for _, node, _raw in sorted(parsed, key=lambda p: p[0]):
            self.nodes[node.id] = node
            self.order.append(node.id)
            if node.definition is not None:
                self._add_graph(node.definition, node.id + ":", definitions, depth + 1, node.mode)

    # -- one node ---------------------------------------------------------------------------

    def _convert_node(self, node: _Node) -> dict | None:
        if node.type in VIRTUAL_TYPES or node.definition is not None:
            return None
        if node.mode in (MODE_NEVER, MODE_BYPASS):
            return None
        node_def = self.node_defs.get(node.type)
        if node_def is None:
            if node.type.startswith(("workflow>", "workflow/")):
                self._fail(node, f"{node.label} is a group node (the editor's old 'Convert to Group "
                                 "Node'), which Loom does not run: open the workflow in the editor and "
                                 "convert it to a subgraph, or ungroup it")
            elif self._is_wired(node):
                self._fail(node, f"Node type '{node.type}' ({node.label}) is not installed: the "
                                 "workflow needs a node pack that Loom did not load. Install it in "
                                 "custom_nodes/ and restart, or remove the node")
            return None  # an unknown node that is not wired to anything: an editor-only note
        inputs: dict[str, Any] = {}
        widget_values = self._widget_values(node)
        declared = _declared_inputs(node_def)
        slots = self._input_slots(node)
        for name, optional in declared:
            slot = slots.pop(name, None)
            resolved = self._resolve_input(node, slot) if slot is not None else None
            if resolved is not None and resolved.kind in ("link", "const"):
                inputs[name] = _value_of(resolved)
                continue
            if name in widget_values:
                inputs[name] = widget_values[name]
                continue
            if resolved is not None and not optional:
                culprit = {"linked_node": resolved.culprit.id} if resolved.culprit else {}
                self._fail(node, f"Input '{name}' of {node.label} {resolved.reason}", name, **culprit)
            elif name in self._widget_names(node.type) and not optional:
                self._fail(node, f"Widget '{name}' of {node.label} has no value in the workflow "
                                 "and no default", name)
        # Sockets the declaration does not list (inputs a node adds as they are connected).
        for name, slot in slots.items():
            resolved = self._resolve_input(node, slot)
            if resolved.kind in ("link", "const"):
                inputs[name] = _value_of(resolved)
        title = node.title or self.node_defs[node.type].get("display_name") or node.type
        return {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}

    def _is_wired(self, node: _Node) -> bool:
        if any(i.get("link") is not None for i in node.inputs):
            return True
        if any(o.get("links") for o in node.outputs):
            return True
        if self._linked is None:
            self._linked = {(scope, end) for (scope, _), link in self.links.items()
                            for end in (link.origin_id, link.target_id)}
        return (node.scope, node.id[len(node.scope):]) in self._linked

    def _input_slots(self, node: _Node) -> dict[str, dict]:
        """The node's linked input sockets by input name (a widget's name when converted)."""
        slots: dict[str, dict] = {}
        for slot in node.inputs:
            if slot.get("link") is None:
                continue
            widget = slot.get("widget")
            name = widget.get("name") if isinstance(widget, dict) else None
            name = name if isinstance(name, str) and name else slot.get("name")
            if isinstance(name, str) and name and name not in slots:
                slots[name] = slot
        return slots

    # -- widget values ----------------------------------------------------------------------

    def _widget_names(self, class_type: str) -> set[str]:
        return {w.name for w in self._widget_specs(class_type) if not (w.upload or w.phantom)}

    def _widget_specs(self, class_type: str) -> list[_WidgetSpec]:
        cached = self._widget_cache.get(class_type)
        if cached is None:
            cached = self._widget_cache[class_type] = _widget_specs(self.node_defs[class_type])
        return cached

    def _widget_values(self, node: _Node) -> dict[str, Any]:
        """Widget name -> value: the saved value, or the declared default when there is none."""
        specs = self._widget_specs(node.type)
        values = node.widgets_values
        saved: dict[str, Any] = {}
        if isinstance(values, dict):
            saved = {w.name: values[w.name] for w in specs if w.name in values}
        elif isinstance(values, list):
            saved = _match_widget_list(values, specs)
        elif values is not None:
            self._fail(node, f"{node.label}: 'widgets_values' must be a list or an object, got "
                             f"{type(values).__name__}")
        if isinstance(node.named_values, dict):
            # Editors restore the list by default (by name only behind an experimental
            # setting), so the list wins where both have a value.
            for w in specs:
                if saved.get(w.name) is None and w.name in node.named_values:
                    saved[w.name] = node.named_values[w.name]
        result: dict[str, Any] = {}
        for spec in specs:
            if spec.upload or spec.phantom:
                continue
            value = saved.get(spec.name)
            if value is not None:
                result[spec.name] = value
            elif spec.has_default:
                result[spec.name] = spec.default
        return result

    # -- following links upstream -----------------------------------------------------------

    def _resolve_input(self, node: _Node, slot: dict) -> _Resolved:
        return self._follow(node.scope, slot.get("link"), seen=set())

    def _follow(self, scope: str, link_id: Any, seen: set[str]) -> _Resolved:
        link = self.links.get((scope, str(link_id)))
        if link is None:
            return _Resolved("dropped", reason=f"is linked with link {link_id}, which is not in the "
                                               "workflow's links (a damaged workflow?): reconnect it")
        if link.origin_id == str(SUBGRAPH_INPUT_ID) and scope:
            return self._from_subgraph_input(self.nodes[scope[:-1]], link.origin_slot, seen)
        return self._from_output(scope + link.origin_id, link.origin_slot, link.type, seen)

    def _from_output(self, node_id: str, slot: int, link_type: str, seen: set[str]) -> _Resolved:
        node = self.nodes.get(node_id)
        if node is None:
            return _Resolved("dropped", reason=f"is linked to node {node_id}, which is not in the "
                                               "workflow: reconnect it")
        if node_id in seen:
            raise _error(f"Invalid workflow: links loop through {node.label} without reaching a node "
                         "that runs (a cycle of reroutes or bypassed nodes)", node_id=node_id)
        seen = seen | {node_id}
        if node.type in REROUTE_TYPES:
            feed = next((i for i in node.inputs if i.get("link") is not None), None)
            if feed is None:
                return _Resolved("dropped", reason=f"is fed by reroute {node_id}, which has no input: "
                                                   "connect the reroute")
            return self._follow(node.scope, feed["link"], seen)
        if node.type == PRIMITIVE_TYPE:
            values = node.widgets_values
            if isinstance(values, list) and values:
                return _Resolved("const", value=values[0])
            return _Resolved("dropped", reason=f"is fed by primitive {node_id}, which holds no value")
        if node.type == GET_TYPE:
            return self._from_get_node(node, seen)
        if node.mode == MODE_NEVER:
            return _Resolved("dropped", culprit=node,
                             reason=f"is fed by {node.label}, which is muted: unmute it, or mute or "
                                    "bypass this node too")
        if node.mode == MODE_BYPASS:
            return self._through_bypassed(node, slot, link_type, seen)
        if node.definition is not None:
            return self._from_subgraph_output(node, slot, seen)
        return _Resolved("link", node_id=node_id, slot=slot)

    def _through_bypassed(self, node: _Node, slot: int, link_type: str, seen: set[str]) -> _Resolved:
        """A bypassed node hands its output the input of the same type: the input at the same
        index when that one matches, else the first linked input that does."""
        out_type = link_type
        if 0 <= slot < len(node.outputs) and isinstance(node.outputs[slot].get("type"), str):
            out_type = node.outputs[slot]["type"]
        candidates = [(i, s) for i, s in enumerate(node.inputs)
                      if s.get("link") is not None and s.get("type") == out_type]
        if not candidates:
            return _Resolved("dropped", culprit=node,
                             reason=f"is fed by {node.label}, which is bypassed and has no connected "
                                    f"{out_type} input to pass through: un-bypass it or connect it")
        chosen = next((s for i, s in candidates if i == slot), candidates[0][1])
        return self._follow(node.scope, chosen["link"], seen)

    def _from_get_node(self, node: _Node, seen: set[str]) -> _Resolved:
        name = _first_value(node.widgets_values)
        for other in self.nodes.values():
            if (other.type == SET_TYPE and other.scope == node.scope
                    and _first_value(other.widgets_values) == name):
                feed = next((i for i in other.inputs if i.get("link") is not None), None)
                if feed is None:
                    break
                return self._follow(other.scope, feed["link"], seen | {node.id})
        return _Resolved("dropped", reason=f"is fed by {node.label}, which reads {name!r}, but no "
                                           "connected SetNode sets it")

    def _from_subgraph_output(self, node: _Node, slot: int, seen: set[str]) -> _Resolved:
        inner_scope = node.id + ":"
        for (scope, link_id), link in self.links.items():
            if (scope == inner_scope and link.target_id == str(SUBGRAPH_OUTPUT_ID)
                    and link.target_slot == slot):
                return self._follow(scope, link_id, seen)
        return _Resolved("dropped", reason=f"is fed by output {slot} of subgraph {node.label}, which "
                                           "nothing inside the subgraph connects to")

    def _from_subgraph_input(self, instance: _Node, slot: int, seen: set[str]) -> _Resolved:
        if 0 <= slot < len(instance.inputs) and instance.inputs[slot].get("link") is not None:
            return self._follow(instance.scope, instance.inputs[slot]["link"], seen | {instance.id})
        # An unconnected input that the subgraph node shows as a widget: the value is the
        # instance's own (each use of a subgraph may set it differently). The instance saves
        # one value per widget input, in order.
        widget_slots = [i for i, s in enumerate(instance.inputs) if isinstance(s.get("widget"), dict)]
        values = instance.widgets_values
        if slot in widget_slots:
            name = instance.inputs[slot]["widget"].get("name")
            named = instance.named_values
            if isinstance(values, dict) and isinstance(name, str) and name in values:
                return _Resolved("const", value=values[name])
            if isinstance(values, list) and len(values) == len(widget_slots):
                return _Resolved("const", value=values[widget_slots.index(slot)])
            if isinstance(named, dict) and isinstance(name, str) and name in named:
                return _Resolved("const", value=named[name])
        # Otherwise the inner node keeps the value of its own widget.
        return _Resolved("dropped", reason=f"comes from input {slot} of subgraph {instance.label}, "
                                           "which is not connected")


# -- helpers --------------------------------------------------------------------------------


def _value_of(resolved: _Resolved) -> Any:
    return [resolved.node_id, resolved.slot] if resolved.kind == "link" else resolved.value


def _first_value(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None


def _subgraph_definitions(wf: dict) -> dict[str, dict]:
    definitions = wf.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if not isinstance(subgraphs, list):
        return {}
    return {s["id"]: s for s in subgraphs
            if isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"]}


def _parse_link(raw: Any, where: str) -> tuple[str | None, _Link]:
    """A link as ``[id, origin_id, origin_slot, target_id, target_slot, type]`` or an object."""
    if isinstance(raw, (list, tuple)) and len(raw) >= 5:
        link_id, origin_id, origin_slot, target_id, target_slot = raw[:5]
        link_type = raw[5] if len(raw) > 5 else "*"
    elif isinstance(raw, dict):
        link_id, origin_id, origin_slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
        target_id, target_slot, link_type = raw.get("target_id"), raw.get("target_slot"), raw.get("type")
    elif raw is None:  # old editors leave holes in the list
        return None, _Link("", 0, "", 0, "*")
    else:
        raise _error(f"Invalid workflow: a link{where} is neither a list nor an object: {str(raw)[:80]}")
    for value, what in ((link_id, "id"), (origin_id, "origin_id"), (target_id, "target_id")):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _error(f"Invalid workflow: link {link_id}{where} has no valid {what}")
    for value, what in ((origin_slot, "origin_slot"), (target_slot, "target_slot")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(f"Invalid workflow: link {link_id}{where} has no valid {what}")
    return str(link_id), _Link(str(origin_id), origin_slot, str(target_id), target_slot,
                               link_type if isinstance(link_type, str) else "*")


def _input_spec(spec: Any) -> tuple[Any, dict]:
    """``[type, {options}]`` from ``/object_info`` -> (type, options)."""
    if isinstance(spec, (list, tuple)) and spec:
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], opts
    return spec, {}


def _ordered_section(node_def: dict, section: str) -> list[tuple[str, Any]]:
    inputs = node_def.get("input") or {}
    specs = inputs.get(section) or {}
    if not isinstance(specs, dict):
        return []
    order = (node_def.get("input_order") or {}).get(section)
    names = [n for n in order if n in specs] if isinstance(order, list) else []
    names += [n for n in specs if n not in names]
    return [(n, specs[n]) for n in names]


def _declared_inputs(node_def: dict) -> list[tuple[str, bool]]:
    """(name, optional) of every required and optional input, in declaration order."""
    return ([(n, False) for n, _ in _ordered_section(node_def, "required")]
            + [(n, True) for n, _ in _ordered_section(node_def, "optional")])


def _has_control(kind: Any, name: str, opts: dict) -> bool:
    """Whether the editor draws a "control after generate" widget after this one.

    An explicit ``control_after_generate`` (true, a mode word or a custom label) decides; else an
    INT named seed/noise_seed has one (the editors' legacy convention)."""
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return kind == "INT" and name in SEED_NAMES


def _widget_specs(node_def: dict) -> list[_WidgetSpec]:
    """The widgets the editor draws for a node, in the order it saves their values.

    Every required widget input, then the upload button when an image combo asks for one (the
    editor appends it to the required inputs), then the optional widget inputs. ``forceInput``
    inputs of a widget type are kept as "phantoms" that may or may not hold a value.
    """
    specs: list[_WidgetSpec] = []
    for section, optional in (("required", False), ("optional", True)):
        upload = False
        for name, spec in _ordered_section(node_def, section):
            kind, opts = _input_spec(spec)
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if not (is_combo or kind in WIDGET_TYPES):
                continue
            if opts.get("forceInput"):
                specs.append(_WidgetSpec(name, optional, kind=kind if isinstance(kind, str) else "COMBO",
                                         phantom=True, control=_has_control(kind, name, opts)))
                continue
            widget = _WidgetSpec(name, optional, kind="COMBO" if is_combo else kind)
            choices = kind if isinstance(kind, list) else opts.get("options")
            if is_combo and isinstance(choices, list):
                widget.choices = tuple(c for c in choices if isinstance(c, (str, int, float)))
            widget.control = (is_combo or kind in ("INT", "FLOAT")) and _has_control(kind, name, opts)
            widget.filter = widget.control and is_combo
            if "default" in opts:
                widget.has_default, widget.default = True, opts["default"]
            elif widget.choices:
                widget.has_default, widget.default = True, widget.choices[0]
            specs.append(widget)
            upload = upload or (is_combo and any(opts.get(o) for o in UPLOAD_OPTIONS))
        if upload:
            specs.append(_WidgetSpec(name="upload", optional=optional, upload=True))
    return specs


# Costs of a reading of a widget list, compared in this order: values that do not fit their
# widget, values left over at the end, extras the reading declined to skip.
_MISFIT, _LOOSE = 2, 1  # _LOOSE: a combo text that is not one of its (installed) choices


def _fit(spec: _WidgetSpec, value: Any) -> int:
    """0 when ``value`` fits ``spec``, else a misfit cost. None fits all (it means "default")."""
    if value is None:
        return 0
    kind, is_bool = spec.kind, isinstance(value, bool)
    if kind == "INT":
        ok = not is_bool and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    elif kind == "FLOAT":
        ok = not is_bool and isinstance(value, (int, float))
    elif kind == "STRING":
        ok = isinstance(value, str)
    elif kind == "BOOLEAN":
        ok = is_bool
    elif kind == "COMBO":
        if is_bool or not isinstance(value, (str, int, float)):
            return _MISFIT
        if not spec.choices or value in spec.choices:
            return 0
        same_type = all(isinstance(c, str) == isinstance(value, str) for c in spec.choices)
        return _LOOSE if same_type else _MISFIT
    else:
        return 0
    return 0 if ok else _MISFIT


def _is_control(value: Any) -> bool:
    return value is None or isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _is_upload_word(value: Any) -> bool:
    return isinstance(value, str) and value in UPLOAD_VALUES


def _extras(spec: _WidgetSpec, values: list, i: int) -> list[tuple[int, int]]:
    """(values taken, penalty) for the ways the extras after a widget at ``i`` may be saved."""
    if not spec.control:
        return [(0, 0)]
    ways = [(0, 1 if i < len(values) and _is_control(values[i]) else 0)]
    if i < len(values) and _is_control(values[i]):
        ways.append((1, 0))
        if spec.filter:
            filtered = i + 1 < len(values) and isinstance(values[i + 1], str)
            ways[-1] = (1, 1 if filtered else 0)
            if filtered:
                ways.append((2, 0))
    return ways


def _match_widget_list(values: list, specs: list[_WidgetSpec]) -> dict[str, Any]:
    """Pair saved widget values with widget names (see "Widget values" in the module doc).

    Dynamic programming over (widget, value position): each widget takes its value, then its
    possible extras; the cheapest reading of the whole list wins.
    """
    n, m = len(specs), len(values)
    # best[s][i]: (cost, choice) for reading specs[s:] from values[i:]; choice = values taken
    # by spec s in total (its value and extras), or 0 when it takes none.
    best: list[list[tuple[tuple[int, int, int], int]]] = [[((0, 0, 0), 0)] * (m + 1) for _ in range(n + 1)]
    for i in range(m + 1):
        best[n][i] = ((0, m - i, 0), 0)
    for s in range(n - 1, -1, -1):
        spec = specs[s]
        for i in range(m + 1):
            if i == m:  # nothing left: the rest take their defaults
                best[s][i] = ((0, 0, 0), 0)
                continue
            value = values[i]
            ways: list[tuple[int, int, int]] = []  # (values taken, misfit, penalty)
            if spec.upload:
                ways.append((1, 0 if value is None or isinstance(value, str) else _LOOSE, 0))
                ways.append((0, 0, 1 if value is None or _is_upload_word(value) else 0))
            elif spec.phantom:
                ways.append((0, 0, 0))
                ways += [(1 + extra, _fit(spec, value), 1 + penalty)
                         for extra, penalty in _extras(spec, values, i + 1)]
            else:
                ways += [(1 + extra, _fit(spec, value), penalty)
                         for extra, penalty in _extras(spec, values, i + 1)]
            options = []
            for taken, misfit, penalty in ways:
                (a, b, c), _ = best[s + 1][i + taken]
                options.append(((a + misfit, b, c + penalty), taken))
            best[s][i] = min(options, key=lambda o: o[0])
    saved: dict[str, Any] = {}
    i = 0
    for s, spec in enumerate(specs):
        if i >= m:
            break
        taken = best[s][i][1]
        if taken and not (spec.upload or spec.phantom):
            saved[spec.name] = values[i]
        i += taken
    return saved
