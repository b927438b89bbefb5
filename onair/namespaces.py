"""The namespaces onair serves: the operator's watch list (`operator.watchNamespaces`), read by the
gateway exactly as kopf reads it for the operator, so that the gateway never takes a job the
operator will not run."""

from __future__ import annotations

from collections.abc import Sequence

# kopf's own rule: globs, `!` exclusions and comma-separated parts within one entry.
from kopf._cogs.structs.references import NamespaceName, match_namespace

PATTERN_CHARACTERS = frozenset("*?[]!,")


def is_pattern(entry: str) -> bool:
    return bool(PATTERN_CHARACTERS & set(entry))


def watches(watched: Sequence[str], namespace: str) -> bool:
    """Whether a namespace is served; an empty list serves all."""
    return not watched or any(match_namespace(NamespaceName(namespace), entry) for entry in watched)


def listed_namespaces(watched: Sequence[str]) -> list[str | None]:
    """Where to list and watch: each watched namespace by name, so that the chart can bind RBAC per
    namespace; the whole cluster (None) when no names are given or one is a pattern (t-*, !name)."""
    if not watched or any(is_pattern(entry) for entry in watched):
        return [None]
    return list(dict.fromkeys(watched))
