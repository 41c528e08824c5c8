"""Every role documents exactly its defaults in meta/argument_specs.yml, prefixed with its name.

Fails (exit 1) listing each role whose defaults/main.yml and the `main` entry point of
meta/argument_specs.yml disagree, or whose public variables lack the role-name prefix.
"""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(path: pathlib.Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def problems_of(role: pathlib.Path) -> list[str]:
    prefix = role.name + "_"
    defaults = set(load(role / "defaults" / "main.yml"))
    specs = load(role / "meta" / "argument_specs.yml").get("argument_specs", {})
    if "main" not in specs:
        return ["meta/argument_specs.yml has no `main` entry point"]
    documented = set(specs["main"].get("options") or {})
    problems = [f"default not documented: {name}" for name in sorted(defaults - documented)]
    problems += [
        f"documented but no default and not required: {name}"
        for name in sorted(documented - defaults)
        if not specs["main"]["options"][name].get("required")
    ]
    for entry, spec in specs.items():
        for name in spec.get("options") or {}:
            if not name.startswith(prefix):
                problems.append(f"{entry}: variable {name} lacks the prefix {prefix}")
    return problems


def main() -> int:
    failed = False
    for role in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()):
        if role.name.startswith("_"):
            continue
        for problem in problems_of(role):
            failed = True
            print(f"roles/{role.name}: {problem}")
    print("argument specs: " + ("MISMATCH" if failed else "all roles consistent"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
