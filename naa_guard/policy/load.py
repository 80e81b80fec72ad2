"""Read a policy file: the strict YAML loader, ``${ENV}`` expansion, validation, and errors that name
the file, the key, the value and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from naa_guard.attacks import ATTACKS
from naa_guard.attacks.candidates import listable_schema
from naa_guard.blanktext import describe_blank, is_blank
from naa_guard.errors import PolicyError
from naa_guard.policy.messages import describe
from naa_guard.policy.schema import AttackParamsError, Policy
from naa_guard.policy.yaml import StrictYAMLError, load_strict_yaml

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str, source: Path) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env(item, f"{where}.{key}" if where else str(key), source) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, f"{where}[{i}]", source) for i, item in enumerate(value)]
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if is_blank(os.environ.get(name)):
                value = os.environ.get(name)
                state = "is not set" if value is None else "is set to an empty string" if not value else f"is set to a {describe_blank(value)} value"
                raise PolicyError(
                    f"{source}: {where}: environment variable ${{{name}}} {state}; an empty or blank value would silently "
                    f"change the meaning of the key (a path would become the policy's own folder, a prompt would carry no text). "
                    f"Set it to a non-blank value before running, or write the value into the policy."
                )
            return os.environ[name]

        return _ENV_PATTERN.sub(substitute, value)
    return value


def _format(exc: ValidationError, source: Path) -> str:
    lines = []
    for err in exc.errors():
        nested = err.get("ctx", {}).get("error")
        if isinstance(nested, AttackParamsError):
            items = [((*err["loc"], *loc), msg, found) for loc, msg, found in nested.errors]
        else:
            items = [(err["loc"], describe(err, Policy, err["loc"]), err.get("input"))]
        for loc, msg, found in items:
            key = ".".join(map(str, loc)) or "(top level)"
            found_text = "" if err["type"] == "missing" else f" (found: {found!r})"
            lines.append(f"  - {key}: {msg}{found_text}")
    lines.insert(0, f"{source}: the policy is invalid ({len(lines)} problem(s)):")
    lines.append("Fix these keys in the policy file; `naa-guard schema` prints every allowed key.")
    return "\n".join(lines)


def parse_policy(raw: Any, source: Path) -> Policy:
    """Return the validated policy from already-parsed YAML content read from ``source``."""
    if not isinstance(raw, dict):
        raise PolicyError(
            f"{source}: a policy must be a YAML mapping with keys version, name, model, data, ...; "
            f"found {type(raw).__name__}. See policies/demo.naa.yaml for an example."
        )
    raw = _expand_env(raw, "", source)
    raw.setdefault("name", source.name.split(".")[0])
    try:
        policy = Policy.model_validate(raw, context={"base_dir": source.resolve().parent})
    except ValidationError as exc:
        raise PolicyError(_format(exc, source)) from None
    return policy.model_copy(update={"source": source.resolve()})


def load_policy(path: str | Path) -> Policy:
    """Return the validated policy read from a YAML file."""
    source = Path(path)
    if source.exists() and not source.is_file():
        raise PolicyError(
            f"{source}: not a regular file (a folder, pipe or device); a policy is a YAML file. "
            f"Give the path of a .naa.yaml file (pytest's --naa-policy also takes a folder of them)."
        )
    if not source.is_file():
        raise PolicyError(
            f"{source}: policy file not found (looked for {source.resolve()}). "
            f"Check the path, or run `naa-guard demo` to write an example policy."
        )
    try:
        raw = load_strict_yaml(source)
    except StrictYAMLError as exc:
        raise PolicyError(f"{source}: refused: {exc}.") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}. Fix the syntax at the line shown.") from None
    except RecursionError:
        raise PolicyError(f"{source}: the YAML nests too deeply to read; a policy needs a few levels only.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{source}: cannot read the policy file: {exc}.") from None
    return parse_policy(raw, source)


def policy_schema() -> dict[str, Any]:
    """Return the JSON schema of version-1 policy files."""
    schema = Policy.model_json_schema()
    schema["properties"].pop("source", None)
    schema["properties"]["attacks"]["properties"] = {
        name: listable_schema(attack.Params.model_json_schema()) for name, attack in sorted(ATTACKS.items())
    }
    schema["properties"]["attacks"]["additionalProperties"] = False
    return schema
