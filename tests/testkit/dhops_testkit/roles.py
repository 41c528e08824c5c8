"""Render a role's own template with the role's defaults, the way Ansible's template module
does, so tests run Envoy with the bootstrap the envoy role deploys (never a hand copy).

Only the variables a template uses are resolved; a default that needs inventory facts
(`inventory_hostname`, `groups`, lookups) must be given in `overrides`, else rendering fails
with the undefined name.
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nativetypes
import yaml

from .base import ROOT

ROLES = ROOT / "roles"
MANAGED = "Rendered by dhops_testkit from the role's template for a test; not managed by Ansible"


def _to_json(value: Any, **kw: Any) -> str:
    return json.dumps(value, **kw)


_OPERATORS = {
    "<": operator.lt, "lt": operator.lt, "<=": operator.le, "le": operator.le,
    ">": operator.gt, "gt": operator.gt, ">=": operator.ge, "ge": operator.ge,
    "==": operator.eq, "=": operator.eq, "eq": operator.eq,
    "!=": operator.ne, "<>": operator.ne, "ne": operator.ne,
}  # fmt: skip


def _version_test(value: Any, other: Any, op: str = "eq") -> bool:
    """Ansible's `version` test for plain X.Y.Z versions."""

    def parts(v: Any) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", str(v)))

    return _OPERATORS[op](parts(value), parts(other))


def _environment(cls: type[jinja2.Environment], **options: Any) -> jinja2.Environment:
    env = cls(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, **options)
    env.filters["to_json"] = _to_json
    env.tests["version"] = _version_test
    return env


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def _template_source(role: str, template: str) -> tuple[str, dict[str, Any]]:
    """The template text and its `#jinja2:` header options (as Ansible reads them)."""
    source = (ROLES / role / "templates" / template).read_text()
    first, _sep, rest = source.partition("\n")
    if not first.startswith("#jinja2:"):
        return source, {}
    options = {}
    for item in first[len("#jinja2:") :].split(","):
        key, _sep, value = item.partition(":")
        options[key.strip()] = {"true": True, "false": False}.get(value.strip().lower(), value)
    return rest, options


class _Resolver:
    """Ansible-style lazy variables: a templated default is rendered when first needed."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.raw = variables
        self.done: dict[str, Any] = {}
        self.native = _environment(jinja2.nativetypes.NativeEnvironment)

    def resolve(self, name: str, seen: tuple[str, ...] = ()) -> Any:
        if name in self.done:
            return self.done[name]
        if name not in self.raw:
            raise KeyError(f"{name} is neither a role default nor given to the renderer")
        if name in seen:
            raise ValueError(f"variables refer to each other: {' -> '.join((*seen, name))}")
        value = self._value(self.raw[name], (*seen, name))
        self.done[name] = value
        return value

    def _value(self, value: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(value, list):
            return [self._value(v, seen) for v in value]
        if isinstance(value, dict):
            return {k: self._value(v, seen) for k, v in value.items()}
        if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
            return value
        names = jinja2.meta.find_undeclared_variables(self.native.parse(value))
        context = {n: self.resolve(n, seen) for n in names if n in self.raw}
        return self.native.from_string(value).render(context)

    def context_for(self, names: set[str]) -> dict[str, Any]:
        return {n: self.resolve(n) for n in names if n in self.raw}


def _prepare(role: str, template: str, overrides: dict[str, Any]):
    source, options = _template_source(role, template)
    env = _environment(jinja2.Environment, **options)
    names = jinja2.meta.find_undeclared_variables(env.parse(source))
    variables = {"ansible_managed": MANAGED, **role_defaults(role), **overrides}
    return env, source, _Resolver(variables).context_for(names)


def render_role_template(role: str, template: str, overrides: dict[str, Any]) -> str:
    """Render roles/<role>/templates/<template> with the role's defaults + `overrides`."""
    env, source, context = _prepare(role, template, overrides)
    return env.from_string(source).render(context)


def template_variables(role: str, template: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The resolved variables the template uses (to hand the same values to Ansible)."""
    context = _prepare(role, template, overrides)[2]
    context.pop("ansible_managed", None)
    return context


def envoy_bootstrap(version: str, overrides: dict[str, Any]) -> str:
    """The envoy role's bootstrap for `version` (v3 template from 1.18 on, as the role picks)."""
    major, minor = (int(p) for p in version.split(".")[:2])
    template = "config_v2.yaml.j2" if (major, minor) < (1, 18) else "config_v3.yaml.j2"
    return render_role_template("envoy", template, {"envoy_version": version, **overrides})


def write_envoy_bootstrap(path: Path, version: str, overrides: dict[str, Any]) -> Path:
    """Write it as *.yaml: Envoy picks its parser from the file name."""
    assert path.suffix == ".yaml", path
    path.write_text(envoy_bootstrap(version, overrides))
    return path
