"""A strict YAML reader for policy files: no duplicate keys, bounded aliases and size.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (``auc: 0.60`` then
``auc: 0.99`` gates at 0.99) and expands aliases without limit (a few hundred bytes can stand for
gigabytes). Here a repeated key is an error naming both lines, a file above
:data:`MAX_BYTES` is refused unread, at most :data:`MAX_ALIASES` aliases are allowed, and the
document, with aliases expanded, may hold at most :data:`MAX_NODES` nodes. Merge keys (``<<``)
keep their YAML meaning: a key written beside a merge overrides the merged one.

Numbers in exponent notation are read as the numbers they mean. PyYAML follows YAML 1.1, whose
float needs a dot and a signed exponent, so ``1e-5``, ``1e6`` and ``1.0e6`` were strings (and
refused where a number belongs); here, as in YAML 1.2 and JSON, they are numbers: an integral
``1e3`` is the int 1000 (so ``data.limit: 1e3`` works), ``1e-5`` and ``2.5e3`` are floats. Quoted
values stay strings. A file that is not UTF-8 is refused with the line and column of the first
bad byte; an empty file is refused by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_NODES", "StrictYAMLError", "load_strict_yaml"]

MAX_BYTES = 1_000_000  # a policy is a page of settings; candidate grids stay far below this
MAX_ALIASES = 100
MAX_NODES = 100_000
EXPONENT_TAG = "tag:naa-guard,2025:exponent"
# YAML 1.2 / JSON numbers with an exponent that YAML 1.1 (PyYAML) leaves as strings
_EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_INTEGRAL = re.compile(r"^[-+]?[0-9][0-9_]*[eE]\+?([0-9]+)$")  # no dot, exponent >= 0: an integer
MAX_INT_EXPONENT = 18  # beyond it the value is a float (a limit of 10**400 samples means nothing)


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


def _construct_exponent(loader: yaml.SafeLoader, node: Any) -> int | float:
    """Return a plain ``1e3`` as the int 1000 and other exponent numbers (``1e-5``, ``2.5e3``) as floats."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    integral = _INTEGRAL.match(text)
    if integral and int(integral.group(1)) <= MAX_INT_EXPONENT:
        mantissa, exponent = re.split("[eE]", text)
        return int(mantissa) * 10 ** int(exponent)
    return float(text)


_StrictLoader.add_implicit_resolver(EXPONENT_TAG, _EXPONENT, list("-+0123456789."))
_StrictLoader.add_constructor(EXPONENT_TAG, _construct_exponent)


def _decode(data: bytes) -> str:
    """Return the file's text; StrictYAMLError naming the line and column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise StrictYAMLError(
            f"byte 0x{data[exc.start]:02x} at line {line}, column {column} is not UTF-8 (the file was probably saved as "
            f"Latin-1 or Windows-1252); policy files are UTF-8. Fix: re-save the file as UTF-8 in your editor, or convert it "
            f"with iconv -f latin1 -t utf-8"
        ) from None


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
    loader = _StrictLoader(_decode(data))
    try:
        node = loader.get_single_node()
        if node is None:
            raise StrictYAMLError("the file is empty: it holds no YAML document (only whitespace or comments). Write the policy (naa-guard init writes a starting one; policies/demo.naa.yaml is an example)")
        if _expanded_size(node, {}) > MAX_NODES:
            raise StrictYAMLError(f"with its aliases expanded the document holds more than {MAX_NODES} values; write a smaller policy")
        return loader.construct_document(node)
    finally:
        loader.dispose()
