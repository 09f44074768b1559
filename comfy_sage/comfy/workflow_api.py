"""ComfyUI workflows: the UI format (what the editor saves) to the API format (what ``/prompt`` takes),
and a check of a UI workflow against a host's node definitions (its ``/object_info``).

ComfyUI does this conversion in its front end (``graphToPrompt``); there is no Python version in
the host. This one follows the front end's rules, so that the pack's example workflows can be
checked and run without a browser:

* widget values are stored by position (``widgets_values``) in the order of the node's widget
  inputs in its definition; an INT or COMBO with ``control_after_generate`` (and, for old
  definitions, an INT named ``seed``/``noise_seed``) is followed by the control's own value, a
  COMBO with an ``*_upload`` flag by the upload button's; a linked input overrides its widget;
* front-end-only nodes (notes, reroutes, the legacy ``PrimitiveNode``) are not sent; a bypassed
  node (mode 4) passes its input of the output's type through; a muted node (mode 2) is dropped;
* subgraphs (``definitions.subgraphs``) are expanded: an inner node's id becomes
  ``"<outer id>:<inner id>"``; an inner input fed by a subgraph input takes what feeds the
  subgraph node's input of that name outside, or keeps its own widget value when nothing does.

Standard library only: importable without ComfyUI (``object_info`` is passed in as data).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Front-end-only node types: never sent to the host, not in /object_info.
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
# Types that match any link type (V3 match-type templates; "*" for any).
WILDCARD_TYPES = frozenset({"*", "COMFY_MATCHTYPE_V3", "COMFY_ANYTYPE_V3"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow the converter cannot turn into a prompt (unknown node, broken link, widget count)."""


@dataclasses.dataclass(frozen=True)
class Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


@dataclasses.dataclass
class _Graph:
    """One level: the workflow itself or a subgraph definition, as seen from one subgraph node."""
    nodes: dict  # id -> UI node
    links: dict  # id -> Link
    path: tuple  # ids of the subgraph nodes enclosing this level (outermost first)
    parent: Optional["_Graph"] = None
    subgraph: Optional[dict] = None  # the definition, for levels below the top
    instance: Optional[dict] = None  # the subgraph node in the parent level

    def api_id(self, node_id) -> str:
        return ":".join(str(i) for i in (*self.path, node_id))


def _links(raw) -> dict:
    out = {}
    for link in raw or ():
        if isinstance(link, dict):
            item = Link(link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                        link.get("type", "*"))
        else:  # the top level stores [id, origin_id, origin_slot, target_id, target_slot, type]
            item = Link(*link[:6])
        out[item.id] = item
    return out


def _input_specs(definition: dict) -> Iterator[tuple]:
    """(name, type, options) of a node definition's inputs, required first, in the host's order."""
    inputs = definition.get("input", {})
    order = definition.get("input_order", {})
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section, list(specs)):
            spec = specs[name]
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            yield name, kind, options


def _is_widget(kind, options) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def socket_inputs(definition: dict) -> list:
    """The names of a node's inputs that take a link only (no widget), in the host's order."""
    return [name for name, kind, options in _input_specs(definition) if not _is_widget(kind, options)]


def widget_slots(definition: dict) -> list:
    """The input name behind each ``widgets_values`` position of a node (None: a control's value)."""
    slots = []
    for name, kind, options in _input_specs(definition):
        if not _is_widget(kind, options):
            continue
        slots.append(name)
        control = options.get("control_after_generate")
        if control is None and kind == "INT" and name in ("seed", "noise_seed"):
            control = True  # the front end's rule for definitions older than the flag
        if control:
            slots.append(None)
        if any(options.get(flag) for flag in UPLOAD_FLAGS):
            slots.append(None)
    return slots


def _widget_values(node: dict, definition: dict, where: str) -> dict:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        raise WorkflowError(f"{where}: widgets_values is a dict (a custom front-end widget); not supported")
    slots = widget_slots(definition)
    required = [i for i, name in enumerate(slots) if name is not None]
    # The front end drops trailing control/upload values in some versions: every named widget must be there.
    if len(values) > len(slots) or (required and len(values) <= required[-1]):
        raise WorkflowError(f"{where}: {len(values)} widget values, the definition has {len(required)} widgets "
                            f"({', '.join(n for n in slots if n)}) and {len(slots) - len(required)} control values")
    return {name: value for name, value in zip(slots, values) if name is not None}


class _Converter:
    def __init__(self, workflow: dict, object_info: dict):
        self.object_info = object_info
        self.subgraphs = {sg["id"]: sg for sg in (workflow.get("definitions") or {}).get("subgraphs") or ()}
        self.prompt: dict = {}
        self.top = _Graph({n["id"]: n for n in workflow["nodes"]}, _links(workflow.get("links")), ())

    def where(self, graph: _Graph, node) -> str:
        return f"node {graph.api_id(node['id'])} ({node['type']})"

    # -- resolving where a value comes from --------------------------------------------------------

    def source(self, graph: _Graph, link_id) -> Optional[list]:
        """[api id, output slot] of the real node a link carries a value from, or None (no value:
        a muted node, an unconnected subgraph input, a front-end primitive)."""
        if link_id is None:
            return None
        link = graph.links.get(link_id)
        if link is None:
            raise WorkflowError(f"link {link_id} is used at level {graph.path or 'top'} but not defined there")
        return self.output_of(graph, link.origin_id, link.origin_slot, link.type)

    def output_of(self, graph: _Graph, node_id, slot, link_type) -> Optional[list]:
        if node_id == SUBGRAPH_INPUT_NODE:
            name = graph.subgraph["inputs"][slot]["name"]
            outer = next((i for i in graph.instance.get("inputs") or () if i["name"] == name), None)
            return None if outer is None else self.source(graph.parent, outer.get("link"))
        node = graph.nodes.get(node_id)
        if node is None:
            raise WorkflowError(f"a link leaves node {graph.api_id(node_id)}, which does not exist")
        mode = node.get("mode", MODE_ALWAYS)
        if mode == MODE_NEVER or node["type"] == "PrimitiveNode":
            return None  # a legacy PrimitiveNode's value is already in its targets' widgets_values
        if node["type"] == "Reroute":
            return self.source(graph, (node.get("inputs") or [{}])[0].get("link"))
        if mode == MODE_BYPASS:
            return self.bypass(graph, node, slot, link_type)
        if node["type"] in self.subgraphs:
            inner = self.enter(graph, node)
            into = next((l for l in inner.links.values()
                         if l.target_id == SUBGRAPH_OUTPUT_NODE and l.target_slot == slot), None)
            return None if into is None else self.output_of(inner, into.origin_id, into.origin_slot, into.type)
        return [graph.api_id(node_id), slot]

    def bypass(self, graph: _Graph, node: dict, slot, link_type) -> Optional[list]:
        inputs = node.get("inputs") or []
        out_type = (node.get("outputs") or [])[slot].get("type", link_type) if slot < len(node.get("outputs") or []) \
            else link_type
        # The front end's order: the input at the same index if its type matches, else the first that does.
        candidates = ([inputs[slot]] if slot < len(inputs) else []) + inputs
        for candidate in candidates:
            if candidate.get("link") is not None and _types_match(candidate.get("type", "*"), out_type):
                return self.source(graph, candidate["link"])
        return None

    def enter(self, graph: _Graph, instance: dict) -> _Graph:
        sg = self.subgraphs[instance["type"]]
        if instance["type"] in (g for g in self._stack(graph)):
            raise WorkflowError(f"subgraph {instance['type']} contains itself")
        return _Graph({n["id"]: n for n in sg["nodes"]}, _links(sg.get("links")), (*graph.path, instance["id"]),
                      graph, sg, instance)

    @staticmethod
    def _stack(graph: _Graph) -> Iterator[str]:
        while graph is not None and graph.subgraph is not None:
            yield graph.subgraph["id"]
            graph = graph.parent

    # -- emitting ---------------------------------------------------------------------------------

    def convert(self) -> dict:
        self.emit_level(self.top)
        return self.prompt

    def emit_level(self, graph: _Graph) -> None:
        for node in sorted(graph.nodes.values(), key=lambda n: n["id"]):
            kind, mode = node["type"], node.get("mode", MODE_ALWAYS)
            if kind in VIRTUAL_TYPES or mode in (MODE_NEVER, MODE_BYPASS):
                continue
            if kind in self.subgraphs:
                self.emit_level(self.enter(graph, node))
                continue
            definition = self.object_info.get(kind)
            if definition is None:
                raise WorkflowError(f"{self.where(graph, node)}: the host has no node of this type")
            inputs = _widget_values(node, definition, self.where(graph, node))
            for slot in node.get("inputs") or ():
                if slot.get("link") is None:
                    continue
                value = self.source(graph, slot["link"])
                if value is not None:
                    inputs[slot["name"]] = value
                elif slot.get("widget") is None:
                    inputs.pop(slot["name"], None)  # its source is muted or unconnected upstream
            meta = {"title": node.get("title") or definition.get("display_name") or kind}
            self.prompt[graph.api_id(node["id"])] = {"inputs": inputs, "class_type": kind, "_meta": meta}


def _types_match(a: str, b: str) -> bool:
    if a in WILDCARD_TYPES or b in WILDCARD_TYPES:
        return True
    return bool(set(str(a).split(",")) & set(str(b).split(",")))


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt (``{"<id>": {"class_type", "inputs", "_meta"}}``) of a UI workflow.

    ``object_info``: the host's node definitions (``GET /object_info``), at least those the
    workflow uses. Raises WorkflowError when the workflow cannot be converted."""
    return _Converter(workflow, object_info).convert()


# -- checking a UI workflow against node definitions --------------------------------------------------


def _check_value(name, kind, options, value) -> Optional[str]:
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        if options.get("multiselect"):
            return None
        return None if value in choices else f"{name}={value!r} is not one of its {len(choices)} options"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name}={value!r} is not a number"
        if kind == "INT" and value != int(value):
            return f"{name}={value!r} is not an integer"
        low, high = options.get("min"), options.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{name}={value!r} is outside [{low}, {high}]"
    return None


def check(workflow: dict, object_info: dict, check_combos: bool = True) -> list:
    """Problems of a UI workflow against a host's node definitions: unknown node types, input
    names the definition lacks, links between mismatched types or to missing slots, widget values
    of the wrong count, type or range. ``check_combos=False`` skips combo membership (model file
    lists depend on the files a host has). Returns messages; empty means valid."""
    problems = []
    subgraphs = {sg["id"]: sg for sg in (workflow.get("definitions") or {}).get("subgraphs") or ()}
    levels = [("top", workflow["nodes"], _links(workflow.get("links")), None)]
    levels += [(f"subgraph {sg.get('name', sg['id'])}", sg["nodes"], _links(sg.get("links")), sg)
               for sg in subgraphs.values()]
    for level, nodes, links, sg in levels:
        by_id = {n["id"]: n for n in nodes}
        for node in nodes:
            where = f"{level}: node {node['id']} ({node['type']})"
            kind = node["type"]
            if kind in VIRTUAL_TYPES:
                continue
            if kind in subgraphs:
                names = {i["name"] for i in subgraphs[kind]["inputs"]}
                problems += [f"{where}: input {i['name']!r} is not an input of the subgraph"
                             for i in node.get("inputs") or () if i["name"] not in names]
                continue
            definition = object_info.get(kind)
            if definition is None:
                problems.append(f"{where}: the host has no node of this type")
                continue
            specs = {name: (k, o) for name, k, o in _input_specs(definition)}
            try:
                values = _widget_values(node, definition, where)
            except WorkflowError as e:
                problems.append(str(e))
                values = {}
            for name, value in values.items():
                k, o = specs[name]
                if not check_combos and (isinstance(k, list) or k == "COMBO"):
                    continue
                message = _check_value(name, k, o, value)
                if message:
                    problems.append(f"{where}: {message}")
            for slot in node.get("inputs") or ():
                if slot["name"] not in specs:
                    problems.append(f"{where}: input {slot['name']!r} is not in the definition")
        for link in links.values():
            if link.origin_id == SUBGRAPH_INPUT_NODE:
                origin_type = sg["inputs"][link.origin_slot]["type"] if link.origin_slot < len(sg["inputs"]) else None
            else:
                origin = by_id.get(link.origin_id)
                if origin is None:
                    problems.append(f"{level}: link {link.id} leaves node {link.origin_id}, which does not exist")
                    continue
                origin_type = _output_type(origin, link.origin_slot, object_info, subgraphs)
            if link.target_id == SUBGRAPH_OUTPUT_NODE:
                target_type = sg["outputs"][link.target_slot]["type"] if link.target_slot < len(sg["outputs"]) \
                    else None
            else:
                target = by_id.get(link.target_id)
                if target is None:
                    problems.append(f"{level}: link {link.id} enters node {link.target_id}, which does not exist")
                    continue
                slots = target.get("inputs") or []
                if link.target_slot >= len(slots) or slots[link.target_slot].get("link") != link.id:
                    problems.append(f"{level}: link {link.id} enters slot {link.target_slot} of node "
                                    f"{link.target_id}, which does not record it")
                    continue
                target_type = _input_type(target, slots[link.target_slot]["name"], object_info, subgraphs)
            if origin_type is None or target_type is None:
                problems.append(f"{level}: link {link.id} ({link.origin_id}:{link.origin_slot} -> "
                                f"{link.target_id}:{link.target_slot}) has an end with no such slot")
            elif not _types_match(origin_type, target_type):
                problems.append(f"{level}: link {link.id} carries {origin_type} from node {link.origin_id} into "
                                f"a {target_type} input of node {link.target_id}")
    try:
        to_api(workflow, object_info)
    except WorkflowError as e:
        problems.append(str(e))
    return problems


def _output_type(node, slot, object_info, subgraphs) -> Optional[str]:
    kind = node["type"]
    if kind in subgraphs:
        outs = subgraphs[kind]["outputs"]
        return outs[slot]["type"] if slot < len(outs) else None
    if kind in ("Reroute", "PrimitiveNode"):
        return "*"
    outs = (object_info.get(kind) or {}).get("output") or []
    if slot >= len(outs):
        return None
    out = outs[slot]
    return "COMBO" if isinstance(out, list) else out


def _input_type(node, name, object_info, subgraphs) -> Optional[str]:
    kind = node["type"]
    if kind in subgraphs:
        found = next((i for i in subgraphs[kind]["inputs"] if i["name"] == name), None)
        return None if found is None else found["type"]
    if kind == "Reroute":
        return "*"
    for input_name, k, _ in _input_specs(object_info.get(kind) or {}):
        if input_name == name:
            return "COMBO" if isinstance(k, list) else k
    return None


def node_types(workflow: dict) -> set:
    """Every node type a workflow uses, inside subgraphs too (subgraph ids and front-end-only types excluded)."""
    subgraphs = {sg["id"]: sg for sg in (workflow.get("definitions") or {}).get("subgraphs") or ()}
    nodes = list(workflow["nodes"]) + [n for sg in subgraphs.values() for n in sg["nodes"]]
    return {n["type"] for n in nodes if n["type"] not in subgraphs and n["type"] not in VIRTUAL_TYPES}


__all__ = ["WorkflowError", "to_api", "check", "widget_slots", "socket_inputs", "node_types", "Link"]

