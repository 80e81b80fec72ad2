"""The policy schema (version 1): the pydantic models of every section a team writes.

Every number is typed (no booleans or strings as thresholds), unknown keys are errors, paths
resolve against the policy file's folder, and each attack block is validated by the attack's own
parameter model (:mod:`naa_guard.attacks`), candidate lists included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from naa_guard.attacks import ATTACKS, AttackParams
from naa_guard.attacks.candidates import AttackCandidates, CandidateListError, candidate_settings, describe_candidate
from naa_guard.blanktext import describe_blank, is_blank
from naa_guard.policy.messages import describe

POLICY_VERSION = 1


LOADER_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


# The one number type of policy files: a finite int or float, never a bool or a numeric string.
StrictNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


# Paths are written as strings; strict mode would accept only Path objects.
_PATH = {"strict": False}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _non_empty(value: Any) -> Any:
    """Refuse an empty or blank path: Path("") is ".", the policy's own folder, never what was meant."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("the path is empty; an empty path would mean the policy's own folder. Give the path, or remove the key")
    if value is not None and not isinstance(value, (str, Path)):
        raise ValueError(f"expected a path (a string), found {type(value).__name__}")
    return value


def _local_source(value: Any, info: ValidationInfo) -> Any:
    """Refuse a URL as a sample source (naa-guard reads local files only), before it becomes a path."""
    from naa_guard.samples.shards import url_problem  # light: re, tarfile, PIL

    problem = url_problem(value, str(info.field_name)) if isinstance(value, str) else None
    if problem is not None:
        raise ValueError(problem)
    return value


def _resolve(path: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base_dir")
    if path is None or base is None or path.is_absolute():
        return path
    return (Path(base) / path).resolve()


class ModelSection(_Section):
    """Where the checkpoint is and how it may be loaded."""

    path: Path | None = Field(None, **_PATH, description="diffusers folder (model_index.json, or unet/ + scheduler/), relative to the policy file; with a loader: passed to it")
    unet_subfolder: str | None = Field(None, description="UNet subfolder, e.g. unet_ema; default: unet")
    allow_pickle: bool = Field(False, description="allow pickle weights (.bin/.pt/.ckpt); they can run code")
    loader: str | None = Field(
        None,
        description="'package.module:function' returning a Target (runs YOUR code: the only way a policy runs code); "
        "called as function(path=model.path, device=..., dtype=...)",
    )

    lora: Path | None = Field(None, **_PATH, description="LoRA for a Stable Diffusion / SDXL pipeline: a .safetensors file or the folder save_lora_weights wrote, relative to the policy file")
    lora_scale: StrictNumber = Field(1.0, ge=0.0, le=10.0, description="scale the LoRA is applied at (0: the base model alone)")
    single_file: Path | None = Field(
        None, **_PATH,
        description="a model in one .safetensors / .ckpt: a whole SD 1.x / 2.x / SDXL checkpoint (A1111, kohya-ss), or an SD3 / SD3.5 / Flux "
        "checkpoint (all-in-one, or the transformer alone); needs model.config",
    )  # fmt: skip
    config: Path | None = Field(
        None, **_PATH, description="with single_file: a local diffusers folder of the same architecture (configs, tokenizers, scheduler; the weights of any component the file does not hold)"
    )
    variant: Literal["fp16", "bf16"] | None = Field(
        None,
        description="precision variant whose weight files load (diffusion_pytorch_model.<variant>.safetensors, model.<variant>.safetensors, "
        "shards *.<variant>-0000k-of-0000n.safetensors); every component with weights must have them; unset: the plain files. "
        "Weights load into runtime.dtype",
    )
    max_sequence_length: int | None = Field(
        None, ge=1, le=512,
        description="SD3 / Flux: T5 tokens per prompt, as in training (null: the pipeline's default, SD3 256, Flux 512; SD3 DreamBooth "
        "trains with 77, Flux schnell with 256); an SD3 pipeline without T5 feeds this many zero tokens, as diffusers does; an error on other models",
    )
    guidance: StrictNumber | None = Field(
        None, gt=0.0, le=100.0,
        description="guidance-distilled Flux (transformer config guidance_embeds: true) only: the guidance input, as in training "
        "(null: the pipeline's default 3.5); an error on any other model",
    )
    reference: Path | Literal["base"] | None = Field(
        None,
        description="reference model for calibrated attacks (score minus the reference's score on the same noise, reported as "
        "e.g. loss/ref beside loss): a diffusers folder of the same architecture, latent space and scheduler (e.g. the base a "
        "fine-tune started from), or 'base' with model.lora: the pipeline without the adapter (a folder named base is written ./base)",
    )

    _path_given = field_validator("path", "lora", "single_file", "config", mode="before")(_non_empty)
    _resolve_path = field_validator("path", "lora", "single_file", "config")(_resolve)

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_given(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "base" or value is None:
            return value
        from naa_guard.targets.hubcache import resolve_hub_path

        value = resolve_hub_path(_non_empty(value), (info.context or {}).get("base_dir"), "model.reference")
        return Path(value) if isinstance(value, str) else value

    @field_validator("reference")
    @classmethod
    def _resolve_reference(cls, value: Path | str | None, info: ValidationInfo) -> Path | str | None:
        return _resolve(value, info) if isinstance(value, Path) else value

    @field_validator("path", "config", mode="before")
    @classmethod
    def _hub_cache(cls, value: Any, info: ValidationInfo) -> Any:
        from naa_guard.targets.hubcache import resolve_hub_path  # org/name: the local hub cache's snapshot

        return resolve_hub_path(value, (info.context or {}).get("base_dir"), f"model.{info.field_name}")

    @field_validator("loader")
    @classmethod
    def _loader_format(cls, loader: str | None) -> str | None:
        if loader is not None and not LOADER_PATTERN.fullmatch(loader):
            raise ValueError("expected 'package.module:function' (a dotted module path, a colon, then the function name)")
        return loader

    @model_validator(mode="after")
    def _path_or_loader(self) -> ModelSection:
        if self.single_file is not None and (self.path is not None or self.loader is not None or self.lora is not None or self.config is None):
            raise ValueError("model.single_file takes model.config (a diffusers folder of the same architecture) and neither model.path, model.loader nor model.lora")
        if self.config is not None and self.single_file is None:
            raise ValueError("model.config applies to model.single_file only; a diffusers folder is given as model.path")
        if self.path is None and self.loader is None and self.single_file is None:
            raise ValueError("give model.path (a diffusers folder or a cached Hub id org/name), model.single_file with model.config, or model.loader ('package.module:function')")
        if self.loader is not None and self.unet_subfolder is not None:
            raise ValueError("unet_subfolder applies to diffusers folders only; a model.loader gets model.path and picks its own weights")
        if self.loader is not None and self.variant is not None:
            raise ValueError("variant applies to diffusers folders and single files' model.config; a model.loader picks its own weight files")
        if self.loader is not None and (self.max_sequence_length is not None or self.guidance is not None):
            raise ValueError("max_sequence_length and guidance apply to SD3 / Flux diffusers folders only; a model.loader's target encodes its own prompts")
        if self.loader is not None and self.lora is not None:
            raise ValueError("lora applies to diffusers pipeline folders only; a model.loader loads its own adapters")
        if self.reference is not None and self.loader is not None:
            raise ValueError("model.reference applies to diffusers models only; a model.loader's model has no configs naa-guard can check a reference against")
        if self.reference == "base" and (self.lora is None or self.lora_scale == 0):
            raise ValueError("model.reference: base means the pipeline without its adapter, so it needs model.lora (at a lora_scale above 0); for a full fine-tune give the base model's folder")
        return self


class DataSection(_Section):
    """The member and non-member sample sets."""

    members: Path = Field(**_PATH, description="image folder, .npz/.npy, .csv/.jsonl manifest, local Hugging Face dataset (.parquet, save_to_disk folder), or webdataset shards (a .tar, a folder of .tar shards, a brace pattern like shards-{000..009}.tar) of training images; local files only")
    nonmembers: Path = Field(**_PATH, description="same forms: held-out images from the same distribution")
    limit: int | None = Field(None, ge=1, description="per side, seeded subsample")
    control: Path | None = Field(None, **_PATH, description="optional null control: more held-out images the model never saw, same forms")
    fit: Literal["resize", "center_crop", "pad"] | None = Field(
        None,
        description="images whose size differs from the model's: null (default) makes that an error; resize (bicubic, "
        "shorter side, then center crop), center_crop (cut the center, images must be at least the model's size) or pad "
        "(center on black, images must be at most the model's size). Pick how the training images were prepared.",
    )
    prompt: str | None = Field(None, description="one prompt for every image of a text-to-image model (e.g. a DreamBooth instance prompt)")
    conditioning: Literal["auto", "caption", "prompt", "empty"] = Field(
        "auto",
        description="text condition of a text-to-image model: each image's caption (manifest column, metadata.jsonl / metadata.csv, "
        ".txt / .caption sidecar), data.prompt, or the empty caption; auto = prompt when given, else the captions; no captions "
        "is an error unless empty is asked for (the weak, caption-free audit)",
    )
    caption_column: str | None = Field(None, min_length=1, description="the caption column of manifests, metadata files and datasets when it is none of the usual names; webdataset shards: the caption field, or key of the json field (default: the txt field)")
    allow_outside: bool = Field(
        False, description="let a manifest list images outside its own folder, and an image folder's symlinked images, metadata files and sidecars lead outside it (refused by default)"
    )
    split: str | dict[Literal["members", "nonmembers", "control"], str] | None = Field(
        None, description="Hugging Face dataset sources: the split to read, one name or one per side (e.g. {members: train, nonmembers: test}); needed when a dataset has several",
    )
    image_column: str | None = Field(None, min_length=1, description="Hugging Face dataset / parquet sources: the image column when not exactly one column holds images; webdataset shards: the image field (default: the first of jpg, jpeg, png, webp)")

    keys: dict[Literal["members", "nonmembers", "control"], Annotated[Path, Field(strict=False)]] | None = Field(
        None,
        description="the training subset of a corpus: per side, a key list that selects the samples of that side's source by key "
        "(e.g. {members: train_keys.txt, nonmembers: heldout_keys.txt}); a text file of one key per line, or a CSV / parquet with a "
        "'key' column; keys are webdataset keys, a dataset's key column, or file paths without suffix; a key in two sides' lists "
        "or naming no sample is an error; applied before data.limit",
    )

    def split_for(self, role: str) -> str | None:
        """Return the dataset split asked for the set ``role`` (None: the source's only split)."""
        return self.split.get(role) if isinstance(self.split, dict) else self.split  # type: ignore[call-overload]

    _paths_given = field_validator("members", "nonmembers", "control", mode="before")(_non_empty)
    _no_urls = field_validator("members", "nonmembers", "control", mode="before")(_local_source)
    _resolve_paths = field_validator("members", "nonmembers", "control")(_resolve)

    @field_validator("keys", mode="before")
    @classmethod
    def _keys_per_side(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            raise ValueError(
                "give one key list per side, e.g. {members: train_keys.txt, nonmembers: heldout_keys.txt}: "
                "one list for both sides would select the same samples as members and non-members"
            )
        if isinstance(value, dict):
            for role, file in value.items():
                _non_empty(file)
        return value

    @field_validator("keys")
    @classmethod
    def _resolve_keys(cls, value: dict[str, Path] | None, info: ValidationInfo) -> dict[str, Path] | None:
        return None if value is None else {role: _resolve(file, info) for role, file in value.items()}  # type: ignore[misc]

    def keys_for(self, role: str) -> Path | None:
        """Return the key list of the set ``role`` (None: every sample of its source)."""
        return self.keys.get(role) if self.keys else None  # type: ignore[call-overload]

    @field_validator("prompt")
    @classmethod
    def _prompt_carries_text(cls, value: str | None) -> str | None:
        if value is not None and is_blank(value):
            raise ValueError(
                f"the prompt is {describe_blank(value)}: a blank prompt is a missing one, and querying with it would run the weak, "
                "caption-free audit under the name 'prompt'. Give the prompt every image was trained with, or remove data.prompt "
                "(and use the captions, or conditioning: empty to audit caption-free on purpose)"
            )
        return value

    @model_validator(mode="after")
    def _prompt_fits_conditioning(self) -> DataSection:
        if self.conditioning == "prompt" and self.prompt is None:
            raise ValueError("conditioning is 'prompt' but data.prompt is not set; give the prompt every image was trained with")
        if self.prompt is not None and self.conditioning in ("caption", "empty"):
            raise ValueError(f"data.prompt is set but conditioning is {self.conditioning!r}, which ignores it; remove data.prompt or use conditioning: prompt")
        if self.keys and "control" in self.keys and self.control is None:
            raise ValueError("data.keys gives a control key list but data.control is not set; remove keys.control or set data.control")
        return self


class Thresholds(_Section):
    """Gate limits: a gate fails when its metric is above its limit; null disables it."""

    # A limit of 1.0 can never be exceeded (the metrics are at most 1): such a gate would always pass.
    auc: StrictNumber | None = Field(0.60, ge=0.5, lt=1.0, description="limit on the leak AUC, below 1")
    tpr_at_1pct_fpr: StrictNumber | None = Field(0.05, ge=0.0, lt=1.0, description="limit on TPR at 1% FPR, below 1")
    tpr_at_0_1pct_fpr: StrictNumber | None = Field(None, ge=0.0, lt=1.0, description="limit on TPR at 0.1% FPR, below 1")
    decision: Literal["point", "upper_ci"] = Field(
        "upper_ci", description="upper_ci: a gate passes only when the upper end of its confidence interval is at or below the limit (certified); point: when the point estimate is"
    )
    confidence: StrictNumber = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    unresolvable: Literal["error", "warn"] = Field(
        "error", description="a gate these counts cannot resolve (too few non-members for a TPR gate, a limit a non-leaking model could not pass, an epsilon limit no model could exceed): error before loading, or gate anyway with a warning"
    )
    epsilon_lb: StrictNumber | None = Field(None, ge=0.0, description="limit on the empirical epsilon lower bound (a heuristic, not a formal DP audit; see naa_guard/epsilon.py)")
    delta: StrictNumber = Field(1e-5, ge=0.0, lt=1.0, description="the delta of the (epsilon, delta) lower bound")
    max_increase: StrictNumber | None = Field(
        None, ge=0.0, le=1.0,
        description="regression gate: largest allowed rise of AUC / TPR gates since the baseline report, "
        "counted beyond the two confidence intervals' overlap (now CI low - baseline CI high); needs a baseline",
    )

    @model_validator(mode="after")
    def _at_least_one_gate(self) -> Thresholds:
        if not self.limits():
            raise ValueError(
                "every gate is disabled (auc, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr and epsilon_lb are all null), so nothing would be "
                "checked and the audit could only pass; give at least one limit, e.g. auc: 0.60"
            )
        return self

    def limits(self) -> dict[str, float]:
        """Return the enabled gates: metric name -> limit."""
        names = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "epsilon_lb")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class ChecksSection(_Section):
    """Audit validity checks (SPEC section 5); overlap is always checked."""

    shift_auc: StrictNumber | None = Field(0.60, ge=0.5, le=1.0, description="distribution-shift check: largest allowed AUC of a model-free member/non-member classifier; null disables it")
    shift_alpha: StrictNumber = Field(0.01, ge=0.001, le=0.2, description="shift is flagged only when the classifier is also significant at this p-value")
    control_margin: StrictNumber = Field(0.05, ge=0.0, le=0.5, description="null control: allowed |AUC - 0.5| beyond the CI half-width")


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

    dir: Path | None = Field(None, **_PATH, description="folder for JSON, Markdown and HTML reports, relative to the policy file")
    exposed: int = Field(24, ge=0, le=1000, description="how many most-exposed members the reports list (0: none)")

    _dir_given = field_validator("dir", mode="before")(_non_empty)
    _resolve_dir = field_validator("dir")(_resolve)


class TuneSection(_Section):
    """How tuned attacks (a parameter listing candidate values) choose their setting."""

    fraction: StrictNumber = Field(0.2, gt=0.0, lt=1.0, description="share of each side used to choose among candidates; the rest is evaluated")


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
    baseline: Path | None = Field(None, **_PATH, description="a previous report.json to compare with (regression gate: thresholds.max_increase), relative to the policy file")
    source: Path | None = Field(None, **_PATH, exclude=True, description="the file this policy was read from")

    @field_validator("version", mode="before")
    @classmethod
    def _version_not_bool(cls, version: Any) -> Any:
        if isinstance(version, bool):
            raise ValueError("expected the number 1, found a boolean")
        return version

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds_given(cls, thresholds: Any) -> Any:
        if thresholds is None or thresholds == {}:
            raise ValueError(
                "an empty thresholds section enables no gate of its own; list the limits to enforce (e.g. "
                "{auc: 0.60, tpr_at_1pct_fpr: 0.05}), or remove the section to use those defaults"
            )
        return thresholds

    _baseline_given = field_validator("baseline", mode="before")(_non_empty)
    _resolve_baseline = field_validator("baseline")(_resolve)

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
        settings, grid = candidate_settings(raw, model.list_valued)
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
                errors.setdefault((tuple(err["loc"]), describe(err, model, err["loc"])), (where, err.get("input")))
    if errors:
        return None, [(loc, msg + where, found) for (loc, msg), (where, found) in errors.items()]
    return (AttackCandidates(grid, tuple(candidates)) if grid else candidates[0]), []
