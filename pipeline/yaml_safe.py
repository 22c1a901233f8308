"""A YAML loader for files from anyone: yaml.SafeLoader (no Python objects) with size limits.

YAML aliases share one node, so a few hundred bytes (``a: &a [x, x, ...]``, ``b: &b [*a, *a,
...]``, ...) describe billions of values; anything that walks the result (validation, repr)
then takes gigabytes. The composer here counts every node as it would be after expanding the
aliases and stops at ``MAX_NODES``, before anything is constructed. It also stops nesting
deeper than ``MAX_DEPTH``, an alias used inside its own anchor (a cycle) and a key given twice in
one mapping. A value no constructor can make is a YAMLError at its position.
"""
from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode

#: Nodes (keys, values, lists and mappings, each alias counted as the nodes it repeats); a run
#: configuration has well under a hundred.
MAX_NODES = 10_000
#: Nesting of lists and mappings; a run configuration nests three deep (tolerances.fp16.min_top1).
MAX_DEPTH = 32
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


class YamlLimitError(ValueError):
    """The document is refused; ``str()`` is 'problem (at line N); fix' without the file."""


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, '...' marking the cut."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts expanded nodes and nesting while it composes the document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0  # nodes so far, each alias counted as the size of its anchor
        self._aliases = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size

    def _count(self, nodes: int, mark: Any) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            via = (f", counting each of the {self._aliases} alias uses (*name) as the values "
                   "it repeats" if self._aliases else "")
            fix = ("remove the nested aliases and the long lists" if self._aliases
                   else "remove the long lists")
            raise YamlLimitError(f"holds more than {MAX_NODES:,} YAML values{via} (limit "
                                 f"reached{_at(mark)}); a run configuration needs a few dozen "
                                 f"values: {fix}")

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)  # the anchored node, or a ComposerError
            size = self._sizes.get(id(node))
            if size is None:
                raise YamlLimitError(f"uses the alias *{short(str(event.anchor), 40)} inside its "
                                     f"own anchor{_at(event.start_mark)}, which makes an "
                                     "endless structure; write the values out instead")
            self._aliases += 1
            self._count(size, event.start_mark)
            return node
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise YamlLimitError(f"nests lists or mappings more than {MAX_DEPTH} deep"
                                 f"{_at(event.start_mark)}; a run configuration nests at most "
                                 "three levels: flatten it")
        before = self._expanded
        self._count(1, event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            self._sizes[id(node)] = self._expanded - before
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], Any] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key.tag, key.value), key.start_mark)
            if first is not key.start_mark:
                raise YamlLimitError(f"has the key {short(repr(key.value), 40)} twice in one "
                                     f"mapping (lines {first.line + 1} and "
                                     f"{key.start_mark.line + 1}); keep one of them")
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """A value its constructor cannot make (``2024-13-45``, ``!!float x``, an integer of
        5,000 digits) is a ConstructorError at its position, not a ValueError from inside."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            limit = sys.get_int_max_str_digits()
            if not isinstance(node, ScalarNode):
                problem = f"cannot read this {node.id} ({short(str(exc), 80)})"
            elif node.tag == _INT_TAG and len(node.value) > limit:
                problem = f"an integer of {len(node.value)} characters (at most {limit} digits)"
            else:
                problem = (f"cannot read the value {short(repr(node.value), 40)} "
                           f"({short(str(exc), 80)})")
            raise ConstructorError(None, None, problem, node.start_mark) from None


def safe_load(text: str) -> Any:
    """``yaml.safe_load(text)`` within the limits above: YamlLimitError beyond them, YAMLError
    for a syntax error or a tag that is not plain data (e.g. ``!!python/object``)."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
