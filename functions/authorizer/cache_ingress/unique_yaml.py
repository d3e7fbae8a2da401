"""YAML as the project reads it: PyYAML's SafeLoader, refusing duplicate keys.

A module of its own so that PyYAML is imported only when a YAML document is read: the
function's bundled policy is built as JSON (functions/authorizer/Makefile), and a JSON
policy never loads PyYAML into a cold start.
"""

from __future__ import annotations

from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_yaml(text: str) -> object:
    """One YAML document. Raises ValueError with PyYAML's message when the text is not YAML
    or repeats a key (and for the values PyYAML itself rejects with a ValueError).
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  # nosec B506 - SafeLoader
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
