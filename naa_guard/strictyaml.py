"""A strict YAML reader for policy files: no duplicate keys, bounded aliases and size.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (``auc: 0.60`` then
``auc: 0.99`` gates at 0.99) and expands aliases without limit (a few hundred bytes can stand for
gigabytes). Here a repeated key is an error naming both lines, a file above
:data:`MAX_BYTES` is refused unread, at most :data:`MAX_ALIASES` aliases are allowed, and the
document, with aliases expanded, may hold at most :data:`MAX_NODES` nodes. Merge keys (``<<``)
keep their YAML meaning: a key written beside a merge overrides the merged one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_NODES", "StrictYAMLError", "load_strict_yaml"]

MAX_BYTES = 1_000_000  # a policy is a page of settings; candidate grids stay far below this
MAX_ALIASES = 100
MAX_NODES = 100_000


class StrictYAMLError(ValueError):
    """Raised when a YAML text breaks one of the strict rules (the message says which, and where)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and refuses duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise StrictYAMLError(f"more than {MAX_ALIASES} aliases (*name), the {MAX_ALIASES + 1}th at line {mark.line + 1}; write the values out instead")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader itself reports it
                line = key_node.start_mark.line + 1
                if earlier is not None:
                    raise StrictYAMLError(
                        f"duplicate key {key!r} at line {line} (first given at line {earlier}); YAML would silently keep "
                        f"only the last value. Keep one of them"
                    )
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Return how many nodes ``node`` stands for once every alias is expanded (memoised by identity)."""
    if id(node) in memo:
        if memo[id(node)] == 0:
            raise StrictYAMLError(f"the alias at line {node.start_mark.line + 1} refers to a value that contains it (a recursive document)")
        return memo[id(node)]
    memo[id(node)] = 0  # in progress: meeting it again means the document contains itself
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def load_strict_yaml(path: Path) -> Any:
    """Return the parsed content of a YAML file under the strict rules; StrictYAMLError or yaml.YAMLError otherwise."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise StrictYAMLError(f"the file is {size} bytes; a policy may be at most {MAX_BYTES} bytes")
    with path.open("rb") as stream:
        data = stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:  # a file that grew, or a device that reports no size
        raise StrictYAMLError(f"the file is over {MAX_BYTES} bytes; a policy may be at most {MAX_BYTES} bytes")
    loader = _StrictLoader(data.decode("utf-8"))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise StrictYAMLError(f"with its aliases expanded the document holds more than {MAX_NODES} values; write a smaller policy")
        return loader.construct_document(node)
    finally:
        loader.dispose()
