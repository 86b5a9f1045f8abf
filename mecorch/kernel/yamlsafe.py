"""Strict YAML loading for everything mecorch reads from outside.

Safe loader only (no tag builds an object), a size limit, and two limits
on aliases so that a "billion laughs" document is refused instead of
expanded: at most MAX_ALIASES of them, and a bound on what they expand
to. PyYAML gives every use of an anchor the same object, so the load
itself stays small; whoever then walks the document (the AppD's JSON in
the store, a validation, the served AppD) meets every copy. While the
document is composed, each alias adds the size of the node it names
(scalars' lengths, a few bytes a node, its own aliases expanded) to the
document's size; past MAX_EXPANDED_BYTES it is refused: nine levels of
`[*a, *a, *a]` over a 2 KB string (a 3.7 KB text, 60 MB expanded) or over
a 1 MB one (~30 GB) end there. An alias inside the node it names (a
document that holds itself) is refused too.
"""

from __future__ import annotations

import yaml

from mecorch.kernel.errors import InvalidInput

MAX_YAML_BYTES = 1 << 20
MAX_ALIASES = 32
# What a document may grow to once its aliases are expanded (its text
# counted too): a few times the largest text, so anchors that only save
# repetition are never in the way.
MAX_EXPANDED_BYTES = 4 * MAX_YAML_BYTES
_NODE_BYTES = 2             # a node's own share: quotes, brackets, separators


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts alias uses and what they expand to."""

    def __init__(self, stream, what: str = "document"):
        super().__init__(stream)
        self._what = what
        self._aliases = 0
        self._expanded = len(stream) if isinstance(stream, (str, bytes)) else 0
        self._sizes: dict[int, int] = {}     # id(node) -> its size expanded
        self._open: list[str] = []           # anchors of the nodes being composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise InvalidInput(f"YAML uses more than {MAX_ALIASES} aliases")
            if event.anchor in self._open:
                raise InvalidInput(
                    f"{self._what} line {event.start_mark.line + 1}: the YAML alias "
                    f"*{event.anchor[:60]} is inside the node it names (a node cannot "
                    "hold itself)")
            node = super().compose_node(parent, index)
            self._expanded += self._size(node)
            if self._expanded > MAX_EXPANDED_BYTES:
                raise InvalidInput(f"{self._what} expands past {MAX_EXPANDED_BYTES} bytes "
                                   f"through its YAML aliases (line "
                                   f"{event.start_mark.line + 1})")
            return node
        anchor = getattr(event, "anchor", None)
        if anchor is None:
            return super().compose_node(parent, index)
        self._open.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.pop()

    def _size(self, node) -> int:
        """The size of a composed node with every alias in it expanded;
        each distinct node is measured once."""
        size = self._sizes.get(id(node))
        if size is None:
            if isinstance(node, yaml.ScalarNode):
                size = _NODE_BYTES + len(node.value)
            elif isinstance(node, yaml.SequenceNode):
                size = _NODE_BYTES + sum(self._size(n) for n in node.value)
            else:
                size = _NODE_BYTES + sum(self._size(k) + self._size(v) for k, v in node.value)
            self._sizes[id(node)] = size
        return size

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of two equal keys; a descriptor with two
        # appDId lines must be refused, not silently half-read.
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                # "? [a]" makes a list key: unhashable, it would escape as a
                # TypeError (a 500); no mecorch document has such keys.
                raise InvalidInput(f"YAML mapping key must be a scalar "
                                   f"(line {key_node.start_mark.line + 1})") from None
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise InvalidInput(f"YAML mapping has the key {key!r} twice "
                                   f"(line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes, what: str = "document"):
    """Parse one YAML document strictly; raise InvalidInput on any problem."""
    if len(text) > MAX_YAML_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_YAML_BYTES} bytes")
    try:
        return _load(text, what)
    except InvalidInput:
        raise
    except yaml.YAMLError as e:
        raise InvalidInput(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        # PyYAML composes nested collections recursively: "[[[[..." of a
        # few thousand levels would otherwise escape as a 500.
        raise InvalidInput(f"{what} is nested too deeply") from None


def _load(text: str | bytes, what: str):
    loader = _Loader(text, what)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
