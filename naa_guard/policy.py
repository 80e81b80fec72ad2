"""Policy files: the YAML a team writes, validated into a :class:`Policy`.

Paths resolve relative to the policy file, ``${NAME}`` expands from the environment, unknown keys
are rejected, and every validation error names the file, the key path, what was found and what is
allowed (``naa-guard schema`` prints the JSON schema).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from naa_guard.attacks import ATTACKS, AttackParams
from naa_guard.errors import PolicyError
from naa_guard.tuning import AttackCandidates, CandidateListError, candidate_settings, describe_candidate, listable_schema

POLICY_VERSION = 1
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LOADER_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(path: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    if path is None or base is None or path.is_absolute():
        return path
    return (Path(base) / path).resolve()


class ModelSection(_Section):
    """Where the checkpoint is and how it may be loaded."""

    path: Path | None = Field(None, description="diffusers folder (model_index.json, or unet/ + scheduler/), relative to the policy file; with a loader: passed to it")
    unet_subfolder: str | None = Field(None, description="UNet subfolder, e.g. unet_ema; default: unet")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin/.pt/.ckpt); they can run code")
    loader: str | None = Field(
        None,
        description="'package.module:function' returning a Target (runs YOUR code: the only way a policy runs code); "
        "called as function(path=model.path, device=..., dtype=...)",
    )

    _resolve_path = field_validator("path")(_resolve)

    @field_validator("loader")
    @classmethod
    def _loader_format(cls, loader: str | None) -> str | None:
        if loader is not None and not LOADER_PATTERN.fullmatch(loader):
            raise ValueError("expected 'package.module:function' (a dotted module path, a colon, then the function name)")
        return loader

    @model_validator(mode="after")
    def _path_or_loader(self) -> ModelSection:
        if self.path is None and self.loader is None:
            raise ValueError("give model.path (a diffusers folder) or model.loader ('package.module:function')")
        if self.loader is not None and self.unet_subfolder is not None:
            raise ValueError("unet_subfolder applies to diffusers folders only; a model.loader gets model.path and picks its own weights")
        return self


class DataSection(_Section):
    """The member and non-member sample sets."""

    members: Path = Field(description="image folder, .npz/.npy, or .csv/.jsonl manifest of training images")
    nonmembers: Path = Field(description="same forms: held-out images from the same distribution")
    limit: int | None = Field(None, ge=1, description="per side, seeded subsample")
    control: Path | None = Field(None, description="optional null control: more held-out images the model never saw, same forms")

    _resolve_paths = field_validator("members", "nonmembers", "control")(_resolve)


class Thresholds(_Section):
    """Gate limits: a gate fails when its metric is above its limit; null disables it."""

    auc: float | None = Field(0.60, ge=0.5, le=1.0, description="limit on the leak AUC")
    tpr_at_1pct_fpr: float | None = Field(0.05, ge=0.0, le=1.0)
    tpr_at_0_1pct_fpr: float | None = Field(None, ge=0.0, le=1.0)
    decision: Literal["point", "upper_ci"] = Field("point", description="gate on the point value or the CI's upper bound")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    unresolvable: Literal["error", "warn"] = Field("error", description="a TPR gate with too few non-members: error, or gate anyway with a warning")

    def limits(self) -> dict[str, float]:
        """Return the enabled gates: metric name -> limit."""
        names = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class ChecksSection(_Section):
    """Audit validity checks (SPEC section 5); overlap is always checked."""

    shift_auc: float | None = Field(0.60, ge=0.5, le=1.0, description="distribution-shift check: largest allowed AUC of a model-free member/non-member classifier; null disables it")
    shift_alpha: float = Field(0.01, ge=0.001, le=0.2, description="shift is flagged only when the classifier is also significant at this p-value")
    control_margin: float = Field(0.05, ge=0.0, le=0.5, description="null control: allowed |AUC - 0.5| beyond the CI half-width")


class Runtime(_Section):
    """Where and how the model runs."""

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = Field(64, ge=1, le=65_536)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    compile: bool = Field(False, description="run the UNet through torch.compile (faster on GPUs after a warm-up; scores may differ in the last bits)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError("unknown device; allowed: auto, cpu, cuda, cuda:N (e.g. cuda:0), mps")
        return device


class ReportSection(_Section):
    """Where reports go."""

    dir: Path | None = Field(None, description="folder for JSON and Markdown reports, relative to the policy file")

    _resolve_dir = field_validator("dir")(_resolve)


class TuneSection(_Section):
    """How tuned attacks (a parameter listing candidate values) choose their setting."""

    fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of each side used to choose among candidates; the rest is evaluated")


class AttackParamsError(ValueError):
    """Carries the nested errors of one attack's parameters, so they keep their key paths."""

    def __init__(self, errors: list[tuple[tuple[Any, ...], str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in errors))
        self.errors = errors


class Policy(_Section):
    """A validated version-1 policy file."""

    version: Literal[1] = Field(description="policy schema version; must be 1")
    name: str = Field(min_length=1, description="a name for reports and test ids")
    model: ModelSection
    data: DataSection
    attacks: dict[str, Any] = Field(
        default_factory=lambda: {"naa": {}},
        validate_default=True,
        description="attack name -> its parameters ({} for defaults); only listed attacks run; a list of values lists candidates (see tune)",
    )
    tune: TuneSection = Field(default_factory=TuneSection)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    checks: ChecksSection = Field(default_factory=ChecksSection)
    runtime: Runtime = Field(default_factory=Runtime)
    report: ReportSection = Field(default_factory=ReportSection)
    source: Path | None = Field(None, exclude=True, description="the file this policy was read from")

    @field_validator("attacks")
    @classmethod
    def _validate_attacks(cls, attacks: dict[str, Any]) -> dict[str, AttackParams | AttackCandidates]:
        if not attacks:
            raise ValueError(f"no attack listed; list at least one of: {', '.join(sorted(ATTACKS))}")
        validated: dict[str, AttackParams | AttackCandidates] = {}
        errors: list[tuple[tuple[Any, ...], str, Any]] = []
        for name, params in attacks.items():
            if name not in ATTACKS:
                errors.append(((name,), f"unknown attack; known attacks: {', '.join(sorted(ATTACKS))}", name))
                continue
            settings, attack_errors = _validate_attack(ATTACKS[name].Params, params or {})
            errors.extend(((name, *loc), msg, found) for loc, msg, found in attack_errors)
            if settings is not None:
                validated[name] = settings
        if errors:
            raise AttackParamsError(errors)
        return validated


def _validate_attack(model: type[AttackParams], raw: Any) -> tuple[AttackParams | AttackCandidates | None, list[tuple[tuple[Any, ...], str, Any]]]:
    """Return one attack block's parameters (or its candidates when values are lists) and its errors."""
    try:
        settings, grid = candidate_settings(raw)
    except CandidateListError as exc:
        return None, [((key,), msg, found) for key, msg, found in exc.errors]
    candidates, errors = [], {}
    for setting in settings:
        try:
            candidates.append(model.model_validate(setting))
        except ValidationError as exc:
            where = f" (in candidate {describe_candidate(setting, grid)})" if grid else ""
            for err in exc.errors():
                # The same bad value recurs in many combinations: report it once.
                errors.setdefault((tuple(err["loc"]), _describe(err, model, err["loc"])), (where, err.get("input")))
    if errors:
        return None, [(loc, msg + where, found) for (loc, msg), (where, found) in errors.items()]
    return (AttackCandidates(grid, tuple(candidates)) if grid else candidates[0]), []


def _expand_env(value: Any, where: str, source: Path) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env(item, f"{where}.{key}" if where else str(key), source) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, f"{where}[{i}]", source) for i, item in enumerate(value)]
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise PolicyError(
                    f"{source}: {where}: environment variable ${{{name}}} is not set. "
                    f"Set it before running, or write the value into the policy."
                )
            return os.environ[name]

        return _ENV_PATTERN.sub(substitute, value)
    return value


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Return the keys allowed at the parent of ``loc`` when it is a known section."""
    for key in loc[:-1]:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(name for name in model.model_fields if name != "source")


def _describe(error: dict[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def _format(exc: ValidationError, source: Path) -> str:
    lines = []
    for err in exc.errors():
        nested = err.get("ctx", {}).get("error")
        if isinstance(nested, AttackParamsError):
            items = [((*err["loc"], *loc), msg, found) for loc, msg, found in nested.errors]
        else:
            items = [(err["loc"], _describe(err, Policy, err["loc"]), err.get("input"))]
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
        policy = Policy.model_validate(raw, context={"base_dir": source.parent.resolve()})
    except ValidationError as exc:
        raise PolicyError(_format(exc, source)) from None
    return policy.model_copy(update={"source": source.resolve()})


def load_policy(path: str | Path) -> Policy:
    """Return the validated policy read from a YAML file."""
    source = Path(path)
    if not source.is_file():
        raise PolicyError(
            f"{source}: policy file not found (looked for {source.resolve()}). "
            f"Check the path, or run `naa-guard demo` to write an example policy."
        )
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}. Fix the syntax at the line shown.") from None
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
