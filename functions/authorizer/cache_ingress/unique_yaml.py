"""YAML as the project reads it: PyYAML's SafeLoader, refusing duplicate keys.

A module of its own so that PyYAML is imported only when a YAML document is read: the
function's bundled policy is built as JSON (functions/authorizer/Makefile), and a JSON
policy never loads PyYAML into a cold start.

`read_yaml` is for documents whose every error is reported at once (the policy): it lists
each repeated key with its path and line instead of stopping at the first, and says on which
line any part of the document is (`YamlDocument.line`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[object, ...]


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


class _FirstKeyLoader(UniqueKeyLoader):
    """Keeps the first of repeated keys: `read_yaml` has listed them already, from the nodes."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            if isinstance(loader, _FirstKeyLoader):
                continue
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


class YamlSyntaxError(ValueError):
    """The text is not one YAML document; `line` (1-based) where PyYAML noticed, if it said."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def load_yaml(text: str) -> object:
    """One YAML document. Raises ValueError with PyYAML's message when the text is not YAML
    or repeats a key (and for the values PyYAML itself rejects with a ValueError).
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  # nosec B506 - SafeLoader
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), _line_of(exc)) from None


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key repeated in one mapping: the mapping's path, the key, the repeat's line."""

    path: Path
    key: str
    line: int


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A YAML document read with its nodes, so any of its parts can be found by path."""

    value: object
    duplicates: tuple[Duplicate, ...]
    root: yaml.Node | None

    def line(self, path: Sequence[object]) -> int | None:
        """The 1-based line of the value at `path` (of its key, for a mapping's entry); of
        the nearest part that exists when the path goes further than the document does."""
        return _line_at(self.root, path)


def read_yaml(text: str) -> YamlDocument:
    """One YAML document, SafeLoader's types. Every repeated key is listed (the first value
    is kept), not raised; raises YamlSyntaxError when the text is not one YAML document.
    """
    loader = _FirstKeyLoader(text)
    try:
        root = loader.get_single_node()
        duplicates = tuple(_duplicates(root, ()))
        value = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), _line_of(exc)) from None
    finally:
        loader.dispose()
    return YamlDocument(value, duplicates, root)


def line_in(text: str, path: Sequence[object]) -> int | None:
    """The line of `path` in any text PyYAML reads (JSON too), or None if it cannot tell."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    return _line_at(root, path)


def _duplicates(node: yaml.Node | None, path: Path) -> Iterator[Duplicate]:
    # Aliases make the nodes a graph; each node is visited once per path that reaches it,
    # and only mappings and sequences are descended into, so an alias bomb is walked once.
    seen: set[int] = set()
    stack: list[tuple[yaml.Node | None, Path]] = [(node, path)]
    while stack:
        current, where = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in current.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in keys:
                    yield Duplicate(where, key, key_node.start_mark.line + 1)
                if key is not None:
                    keys.add(key)
                stack.append((value_node, (*where, key)))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, (*where, index)) for index, item in enumerate(current.value))


def _line_at(root: yaml.Node | None, path: Sequence[object]) -> int | None:
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = next(
                (
                    (key_node, value_node)
                    for key_node, value_node in node.value
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part)
                ),
                None,
            )
            if found is None:
                return line
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _line_of(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return None if mark is None else int(mark.line) + 1
