"""Strict YAML loading for everything mecorch reads from outside.

Safe loader only (no tag builds an object), a size limit, and a limit on
aliases so that a "billion laughs" document is refused instead of expanded.
"""

from __future__ import annotations

import yaml

from .errors import InvalidInput

MAX_YAML_BYTES = 1 << 20
MAX_ALIASES = 32


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts alias uses."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise InvalidInput(f"YAML uses more than {MAX_ALIASES} aliases")
        return super().compose_node(parent, index)

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
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except InvalidInput:
        raise
    except yaml.YAMLError as e:
        raise InvalidInput(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        # PyYAML composes nested collections recursively: "[[[[..." of a
        # few thousand levels would otherwise escape as a 500.
        raise InvalidInput(f"{what} is nested too deeply") from None
