"""Which names a namespace may claim (the name policy). Pure: no I/O.

A Namespace's ``aliasd.io/allowed-names`` annotation lists patterns, else the
``--default-allowed-names`` templates apply (``{namespace}`` replaced), else
any name in the served zones may be claimed (aliasd before the policy). A
pattern is an exact name (``shop.internal``), ``*.suffix`` (any name strictly
under ``suffix``, at any depth, but not ``suffix`` itself: RFC 4592 and TLS
wildcards do not match their parent either), or ``*`` alone (any name). Like
an alias, a pattern without a dot gets the default zone. A malformed pattern
matches nothing (fail closed) and is reported; the others still apply.

Claims of namespaced owners are subject to it (Services, ServiceEntries,
takeovers included); the aliases file and HTTP overrides have no namespace and
are not.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aliasd.model import OVERRIDE_KIND, Owner
from aliasd.names import absolute_name, validate_fqdn

ALLOWED_NAMES_ANNOTATION = "aliasd.io/allowed-names"
NAMESPACE_PLACEHOLDER = "{namespace}"
DEFAULT_RULE = "--default-allowed-names"
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class Pattern:
    """One allowed-names pattern: ``name`` exactly, or (``under``) any name
    strictly below ``name`` (``name`` empty: any name at all)."""

    name: str
    under: bool = False

    def matches(self, name: str) -> bool:
        """Whether ``name`` (normalized) matches."""
        if not self.under:
            return name == self.name
        return not self.name or name.endswith("." + self.name)


def parse_pattern(text: str, default_zone: str) -> Pattern:
    """``shop.internal``, ``*.shop.internal`` or ``*``; ``ValueError`` otherwise."""
    raw = text.strip()
    if raw == "*":
        return Pattern("", under=True)
    under = raw.startswith("*.")
    body = raw[2:] if under else raw
    if "*" in body:
        raise ValueError("'*' is allowed only as the whole first label ('*.shop.internal') "
                         "or alone ('*')")
    name = absolute_name(body, default_zone)
    err = validate_fqdn(name)
    if err:
        raise ValueError(err)
    return Pattern(name, under)


def split_patterns(value: str) -> list[str]:
    """The patterns of an annotation or flag value (comma- or space-separated)."""
    return [p for p in _SPLIT.split(value.strip()) if p]


@dataclass(frozen=True)
class AllowedNames:
    """The names one namespace may claim, and the rule they come from."""

    namespace: str
    rule: str  # "aliasd.io/allowed-names on Namespace shop" or DEFAULT_RULE
    value: str  # as written (the default with {namespace} replaced)
    patterns: tuple[Pattern, ...]
    malformed: tuple[str, ...] = ()  # "'pattern': why", each matching nothing

    def allows(self, name: str) -> bool:
        return any(p.matches(name) for p in self.patterns)

    def refusal(self, name: str) -> str | None:
        """Why ``name`` (normalized) may not be claimed from this namespace, or None."""
        if self.allows(name):
            return None
        why = (f"{name} is not among the names namespace {self.namespace} may claim "
               f"({self.rule}: {self.value!r})")
        if self.malformed:
            why += f"; malformed, so matching nothing: {', '.join(self.malformed)}"
        return why


@functools.lru_cache(maxsize=4096)
def parse_allowed(value: str, *, namespace: str, rule: str, default_zone: str) -> AllowedNames:
    """Every pattern of ``value``; the malformed ones are kept aside, never raised."""
    patterns: list[Pattern] = []
    malformed: list[str] = []
    for text in split_patterns(value):
        try:
            patterns.append(parse_pattern(text, default_zone))
        except ValueError as e:
            malformed.append(f"{text!r} ({e})")
    return AllowedNames(namespace, rule, value.strip(), tuple(patterns), tuple(malformed))


def policy_namespace(owner: Owner) -> str | None:
    """The namespace whose policy applies to ``owner``'s claims, or None (the
    aliases file and HTTP overrides have none: the policy does not apply)."""
    if owner.kind == OVERRIDE_KIND or not owner.namespace:
        return None
    return owner.namespace


@dataclass(frozen=True)
class NamePolicy:
    """The cluster-wide part: the default for namespaces without the annotation
    (templates with ``{namespace}``); None: any name in the served zones. The
    per-namespace values (``allowed``'s ``annotation``) come from the
    Namespaces' annotations, or from ``source``."""

    default: tuple[str, ...] | None = None
    # Where the per-namespace values come from, when not the Namespaces'
    # annotations (``--policy-configmap``: "ConfigMap aliasd-system/aliasd-policy").
    source: str | None = None

    @classmethod
    def parse(cls, items: Iterable[str]) -> NamePolicy:
        """Validated ``--default-allowed-names`` templates (none: no default)."""
        templates: list[str] = []
        for item in items:
            for text in split_patterns(item):
                sample = text.replace(NAMESPACE_PLACEHOLDER, "ns")
                if "{" in sample or "}" in sample:
                    raise ValueError(f"{DEFAULT_RULE} {text!r}: the only placeholder is "
                                     f"{NAMESPACE_PLACEHOLDER}")
                try:
                    parse_pattern(sample, "internal.")
                except ValueError as e:
                    raise ValueError(f"{DEFAULT_RULE} {text!r}: {e}") from None
                templates.append(text)
        return cls(tuple(templates) if templates else None)

    def allowed(self, namespace: str, annotation: str | None, default_zone: str
                ) -> AllowedNames | None:
        """What ``namespace`` may claim given its annotation (None: absent);
        None: any name."""
        if annotation is not None:
            rule = (f"{self.source}, key {namespace}" if self.source is not None
                    else f"{ALLOWED_NAMES_ANNOTATION} on Namespace {namespace}")
            return parse_allowed(annotation, namespace=namespace, rule=rule,
                                 default_zone=default_zone)
        if self.default is None:
            return None
        value = ", ".join(t.replace(NAMESPACE_PLACEHOLDER, namespace) for t in self.default)
        return parse_allowed(value, namespace=namespace, rule=DEFAULT_RULE,
                             default_zone=default_zone)
