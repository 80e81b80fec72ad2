"""``naa-guard init MODEL MEMBERS NONMEMBERS``: write a commented starting policy for a model and two sets.

Everything is read from files, nothing is loaded: the model's kind (pixel, or latent when
``model_index.json`` lists a vae), sample size and prediction type come from its JSON configs; each
set's count, image sizes and captions from a listing and a few image headers. Each set is then
loaded for a handful of samples with the audit's own loader, so a set the audit would refuse is
refused here, with the same message. Only the gates the counts can resolve are switched on; the
others are written as ``null`` with the count they would need.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.errors import DataError, PolicyError, TargetError
from naa_guard.samples import ARRAY_SUFFIXES, IMAGE_EXTENSIONS, list_samples, load_samples
from naa_guard.policy.initlines import model_lines, reference_lines, relative
from naa_guard.samples.conditioning import CAPTION_SOURCES
from naa_guard.userfiles import open_regular, read_regular_text
from naa_guard.verdict.metrics import FPR_LEVELS, min_nonmembers_for
from naa_guard.verdict.resolvable import MIN_PER_SIDE, needed_per_side, null_auc_upper, null_tpr_upper, smallest_certifiable_auc

DEFAULT_AUC = 0.60
CONFIDENCE = 0.95  # the policy default the written thresholds are checked at
_PROBE = 4  # samples each set is test-loaded with
FLOW_PIPELINES = ("StableDiffusion3Pipeline", "FluxPipeline", "Flux2KleinPipeline", "SanaPipeline")
TRANSFORMER_PIPELINES = (*FLOW_PIPELINES, "PixArtSigmaPipeline", "PixArtAlphaPipeline")  # read by the audit's own reader


@dataclass(frozen=True)
class ModelSummary:
    """What the model folder's JSON files say."""

    kind: str  # "pixel" or "latent"
    pipeline: str  # model_index.json's _class_name, or "unet/ + scheduler/"
    sample_size: int  # of the images the model takes (latent: the VAE's output size)
    in_channels: int  # of the images (latent: 3)
    prediction_type: str
    timesteps: int
    variant: str | None = None  # the precision variant its weights exist only as (model.variant)
    family: str | None = None  # a flow-matching family (SPEC 3b): "sd3", "flux", "flux2", "sana"; None: DDPM noise prediction
    t5: bool = False  # a T5 text encoder (flow families)
    guidance_embeds: bool = False  # a guidance-distilled transformer (Flux)


@dataclass(frozen=True)
class SetSummary:
    """What a member or non-member source holds."""

    source: Path
    form: str  # "image folder", "array file" or "manifest"
    count: int
    sizes: tuple[str, ...]  # distinct image sizes among the inspected ones, e.g. "8x8"
    captions: int  # samples with a non-blank caption (manifest column, metadata files, sidecars)
    split: str | None = None  # a Hugging Face dataset's split (see inspect_dataset)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular_text(path, TargetError, "the JSON config", "Re-save the model with save_pretrained."))
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: cannot read this JSON config ({exc}). Re-save the model with save_pretrained.") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


def _side(value: Any) -> int | None:
    value = value[0] if isinstance(value, (list, tuple)) and value else value
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def inspect_model(folder: Path) -> ModelSummary:
    """Return the model's kind, image size and prediction type, read from its JSON configs only."""
    if not folder.is_dir():
        raise TargetError(f"model folder {folder} does not exist or is not a folder. Give a diffusers folder (model_index.json, or unet/ + scheduler/).")
    index = _json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    if index.get("_class_name") in TRANSFORMER_PIPELINES:  # SD3 / Flux / Sana / PixArt: every check of the audit's own reading (SPEC 3b)
        from naa_guard.targets.detect import prediction_summary, read_model_info
        from naa_guard.targets.flow_info import FlowModelInfo

        info: Any = read_model_info(folder, weights=False)  # which weight files load is model.variant's choice, written below
        t5, guided = "text_encoder_3" in info.components or info.family == "flux", bool(info.unet_config.get("guidance_embeds", False))
        family = info.family if isinstance(info, FlowModelInfo) else None  # flow matching: the scan (and for SD3 / Flux the keys)
        return ModelSummary("latent", str(index["_class_name"]), info.sample_size, info.in_channels, *prediction_summary(info), family=family, t5=t5, guidance_embeds=guided)
    for needed in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (folder / needed).is_file():
            raise TargetError(f"{folder}: no {needed}. A diffusers model folder needs unet/ and scheduler/; save the pipeline with save_pretrained.")
    unet, scheduler = _json(folder / "unet" / "config.json"), _json(folder / "scheduler" / "scheduler_config.json")
    size = _side(unet.get("sample_size"))
    if size is None:
        raise TargetError(f"{folder / 'unet' / 'config.json'}: sample_size is {unet.get('sample_size')!r}; expected a positive int.")
    kind, channels = "pixel", unet.get("in_channels")
    if "vae" in index:
        vae = _json(folder / "vae" / "config.json") if (folder / "vae" / "config.json").is_file() else {}
        blocks = vae.get("block_out_channels") or []
        kind, channels, size = "latent", 3, size * 2 ** max(len(blocks) - 1, 0)
    if channels not in (1, 3):
        raise TargetError(f"{folder / 'unet' / 'config.json'}: in_channels is {channels!r}; a pixel model must take 1 or 3 image channels.")
    return ModelSummary(
        kind, str(index.get("_class_name", "unet/ + scheduler/")), size, int(channels),
        str(scheduler.get("prediction_type", "epsilon")), int(scheduler.get("num_train_timesteps", 1000)),
    )  # fmt: skip


def _image_size(file: Path) -> str:
    from PIL import Image

    try:
        with open_regular(file, DataError, "image", "") as handle, Image.open(handle) as image:  # reads the header only; never a pipe
            return f"{image.width}x{image.height}"
    except (OSError, DataError):
        return "unreadable"


def _manifest_rows(manifest: Path) -> list[dict[str, Any]]:
    text = manifest.read_text(encoding="utf-8-sig")
    if manifest.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def inspect_set(source: Path, role: str, model: ModelSummary, split: str | None = None) -> SetSummary:
    """Return the set's form, count, image sizes and captions; load a few samples as the audit would."""
    from naa_guard.samples.hfdataset import is_dataset
    from naa_guard.samples.shards import is_shards

    if is_shards(source):
        return inspect_shards(source, role, model)
    if is_dataset(source):
        return inspect_dataset(source, role, model, split)
    # The audit's own checks; the fit only lets a set of another size be probed: the written
    # policy leaves data.fit for the user to choose (see render_policy).
    load_samples(source, size=model.sample_size, channels=model.in_channels, limit=_PROBE, role=role, fit="resize")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
        # the audit's own listing: metadata.jsonl / metadata.csv and sidecars, blank captions missing
        listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize")
        captions = sum(caption is not None for caption in listed.captions)
        return SetSummary(source, "image folder", len(files), tuple(sorted({_image_size(f) for f in files[:16]})), captions)
    if source.suffix.lower() in ARRAY_SUFFIXES:
        if source.suffix.lower() == ".npy":
            shape = np.load(source, mmap_mode="r", allow_pickle=False).shape
        else:
            with np.load(source, allow_pickle=False) as archive:
                shape = archive["images" if "images" in archive.files else archive.files[0]].shape
        height, width = shape[2:4] if len(shape) == 4 and shape[1] in (1, 3, 4) else shape[1:3]  # (N, C, H, W) or (N, H, W[, C])
        return SetSummary(source, "array file", int(shape[0]), (f"{width}x{height}",), 0)
    try:
        rows = _manifest_rows(source)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError(f"The {role} manifest {source} cannot be read ({exc}).") from None
    listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize")
    captions = sum(caption is not None for caption in listed.captions)
    files = [source.parent / str(row.get("path", "")) for row in rows[:16] if isinstance(row, dict)]
    return SetSummary(source, "manifest", len(rows), tuple(sorted({_image_size(f) for f in files})), captions)




def _set_comment(summary: SetSummary, model: ModelSummary) -> str:
    sizes = ", ".join(summary.sizes) or "unknown"
    note = "" if _fits(summary, model) else f"; NOT the model's {model.sample_size}x{model.sample_size}: see data.fit"
    captions = f"; {summary.captions} with captions" if summary.form != "array file" else ""
    return f"{summary.form}, {summary.count} samples, sizes {sizes}{note}{captions}"


def _fits(summary: SetSummary, model: ModelSummary) -> bool:
    return summary.sizes == (f"{model.sample_size}x{model.sample_size}",)


def _conditioning_lines(model: ModelSummary, members: SetSummary, nonmembers: SetSummary) -> list[str]:
    """Return the data.conditioning lines for the captions found (none for a pixel model)."""
    if model.kind != "latent":
        return []
    found = f"{members.captions} of {members.count} members and {nonmembers.captions} of {nonmembers.count} non-members have a caption"
    if members.captions or nonmembers.captions:
        missing = "" if (members.captions, nonmembers.captions) == (members.count, nonmembers.count) else "; the audit refuses until every image has one"
        return [f"  conditioning: caption   # {found}{missing}"]
    return [
        f"  # NO captions found ({found}). Captions come from {CAPTION_SOURCES}.",
        "  # The audit REFUSES to run with auto until you choose: add the training captions, or set prompt: \"...\" for a",
        "  # model trained on one prompt (DreamBooth), or replace auto with empty to audit caption-free on purpose: the",
        "  # weak audit (measured on a fine-tune: loss AUC 0.91 with captions, 0.54 with the empty caption).",
        "  conditioning: auto",
    ]


def render_policy(
    model_path: Path, model: ModelSummary, members: SetSummary, nonmembers: SetSummary, policy_dir: Path, name: str, config: Path | None = None,
    lora: Path | None = None, reference: Path | None = None,
) -> str:  # fmt: skip
    """Return the commented policy YAML for these inspected inputs, gates limited to what the counts resolve."""
    n_members, n_nonmembers = members.count, nonmembers.count
    if min(n_members, n_nonmembers) < MIN_PER_SIDE:
        raise PolicyError(
            f"too few samples to resolve any gate: {n_members} members, {n_nonmembers} non-members; an AUC gate needs "
            f"at least {MIN_PER_SIDE} of each. Add samples to the smaller set."
        )
    from naa_guard.policy.flowinit import calibration_part, flow_attack_lines, flow_model_lines, scan_fits
    from naa_guard.tuning import MIN_CALIBRATION_SAMPLES

    scan, how = model.family is not None and all(scan_fits(n, MIN_CALIBRATION_SAMPLES, MIN_PER_SIDE) for n in (n_members, n_nonmembers)), ""
    if scan:  # the gates are evaluated on what the tuning split leaves (naa_guard.tuning): set them for those counts
        n_members, n_nonmembers, how = n_members - calibration_part(n_members), n_nonmembers - calibration_part(n_nonmembers), " as evaluated after the tuning split"
    floor = smallest_certifiable_auc(n_members, n_nonmembers, CONFIDENCE)
    auc_limit = max(DEFAULT_AUC, floor)  # a limit a model that does not leak can pass at these counts
    at_default = needed_per_side(lambda n: null_auc_upper(n, n, CONFIDENCE) <= DEFAULT_AUC, start=MIN_PER_SIDE)
    auc_note = (
        f"certifiable: the smallest AUC limit {n_members} members / {n_nonmembers} non-members{how} can certify is {floor:.2f}"
        + ("" if auc_limit == DEFAULT_AUC else f"; {DEFAULT_AUC:.2f} needs {at_default} per side{how}")
    )
    gates = [f"  auc: {auc_limit:.2f}           # {auc_note}"]
    for metric, rate in FPR_LEVELS.items():
        needed = min_nonmembers_for(rate)
        limit = 0.05 if rate == 0.01 else 0.01
        if n_nonmembers >= needed and null_tpr_upper(n_members, n_nonmembers, rate, CONFIDENCE) <= limit:
            gates.append(f"  {metric}: {limit}    # resolvable: {n_nonmembers} >= {needed} non-members, and a model that does not leak can pass {limit}")
        else:
            gates.append(f"  {metric}: null   # needs >= {needed} non-members (and enough members) to be certified; you have {n_members} / {n_nonmembers}{how}")

    kind = "latent text-to-image pipeline (attacks run on VAE latents)" if model.kind == "latent" else "pixel-space diffusion model"
    lines = [
        f"# naa-guard policy written by `naa-guard init` for {model_path}",
        "# Run it: naa-guard audit THIS_FILE, or pytest THIS_FILE. Every key: naa-guard schema.",
        "version: 1",
        f"name: {json.dumps(name)}",
        "model:",
        f"  # {kind}: {model.pipeline}, images {model.sample_size}x{model.sample_size}, {model.in_channels} channel(s),",
        f"  # prediction type {model.prediction_type}, {model.timesteps} training timesteps",
        *model_lines(model_path, config, policy_dir),
        *([f"  variant: {model.variant}         # the weights exist only as this precision variant's files (loaded into runtime.dtype)"] if model.variant else []),
        *(flow_model_lines(model.family, model.t5, model.guidance_embeds) if model.family in ("sd3", "flux") else []),
        *reference_lines(lora, reference, policy_dir),
        "data:",
        f"  members: {json.dumps(relative(members.source, policy_dir))}        # {_set_comment(members, model)}",
        f"  nonmembers: {json.dumps(relative(nonmembers.source, policy_dir))}  # {_set_comment(nonmembers, model)}",
        *([] if _fits(members, model) and _fits(nonmembers, model) else [
            f"  # REQUIRED before auditing: the images are not {model.sample_size}x{model.sample_size}, and naa-guard never resizes",
            f"  # silently. First check the model config: if {model.sample_size} is wrong there, fix the config, not the images.",
            "  # Else uncomment and name the preparation used in training (resize | center_crop | pad): preparing the",
            "  # images another way than training did weakens every attack, and a leaking model can PASS.",
            "  # fit: <resize | center_crop | pad>",
        ]),
        *split_lines(members, nonmembers),
        *_conditioning_lines(model, members, nonmembers),
        "  limit: null          # a seeded subsample per side; null scores every sample",
        *(flow_attack_lines(scan, MIN_CALIBRATION_SAMPLES, MIN_PER_SIDE) if model.family is not None else [
            "attacks:               # the strong cheap peers, 9 queries per image in all: the gate holds against the strongest",
            "  naa: {}              # 5 queries",
            "  sima: {}             # 1 query: the noise prediction at the clean input",
            "  pia: {}              # 2 queries",
            "  loss: {}             # 1 query",
        ]),
        "thresholds:            # a gate fails when its metric is ABOVE the limit; null disables it",
        *gates,
        "  epsilon_lb: null     # limit on the empirical epsilon lower bound (a heuristic, not a formal DP audit)",
        "  decision: upper_ci   # pass only when the upper end of the confidence interval is within the limit (point: the estimate)",
        "  confidence: 0.95",
        "runtime: {device: auto, dtype: float32, batch_size: 64, seed: 0}",
        "report:",
        "  dir: naa-report      # report.json, report.md and report.html, relative to this file; to gate regressions, copy a",
        "                       # released report.json elsewhere and name it in baseline: (never this folder's own report)",
        "  exposed: 24          # most-exposed members listed in the reports",
    ]
    return "\n".join(lines) + "\n"


def _refuse_same_sets(members: Path, nonmembers: Path, model: ModelSummary, splits: tuple[str | None, str | None] = (None, None)) -> None:
    """Raise PolicyError when the members and the non-members are the same source or share image files."""
    fix = (
        "an image cannot be both seen and unseen by the model, so no audit can measure membership. Give the training "
        "images as MEMBERS and held-out images from the same distribution, never trained on, as NONMEMBERS."
    )
    if members.exists() and nonmembers.exists() and members.resolve() == nonmembers.resolve() and (splits[0] is None or splits[0] == splits[1]):
        from naa_guard.samples.hfdataset import is_dataset

        splits_hint = " For a dataset of several splits, name each side's with --members-split and --nonmembers-split." if is_dataset(members) else ""
        raise PolicyError(f"the members and the non-members are the same source ({members.resolve()}): {fix}{splits_hint}")
    if members.suffix.lower() in ARRAY_SUFFIXES or nonmembers.suffix.lower() in ARRAY_SUFFIXES:
        return  # two array files are two sources; identical images are the audit's overlap check
    files = []
    for source, role, split in ((members, "members", splits[0]), (nonmembers, "nonmembers", splits[1])):
        listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize", split=split)
        files.append({Path(listed.origin(i)).resolve() for i in range(len(listed))})
    shared = sorted(files[0] & files[1])
    if shared:
        shown = ", ".join(str(path) for path in shared[:3]) + (f" and {len(shared) - 3} more" if len(shared) > 3 else "")
        raise PolicyError(f"the members and the non-members share {len(shared)} image file(s) ({shown}): {fix}")


def write_initial_policy(
    model_path: Path, members_path: Path, nonmembers_path: Path, output: Path, *, force: bool = False,
    config: Path | None = None, splits: tuple[str | None, str | None] = (None, None), lora: Path | None = None, reference: Path | None = None,
) -> Path:  # fmt: skip
    """Inspect the model and both sets, write the commented policy to ``output`` and return it.

    ``config`` is the diffusers folder of a single-file checkpoint; ``splits`` the dataset split of each side;
    ``lora`` an adapter on the model (then the reference is the model without it: ``reference: base``);
    ``reference`` the base the model was fine-tuned from, checked against the model here.
    """
    if lora is not None and reference is not None:
        raise PolicyError("give --lora or --reference, not both: with a LoRA the reference is the pipeline without it (reference: base)")
    if reference is not None:
        from naa_guard.targets.detect import read_model_info
        from naa_guard.targets.reference import check_reference

        check_reference(read_model_info(model_folder(model_path, config), weights=False), read_model_info(model_folder(reference, None), weights=False))

    if output.exists() and not force:
        raise PolicyError(f"{output} already exists; choose another path with -o, or pass --force to overwrite it.")
    model = inspect_model(model_folder(model_path, config))
    from naa_guard.targets.variants import folder_variant

    model = dataclasses.replace(model, variant=folder_variant(model_folder(model_path, config)))
    _refuse_same_sets(members_path, nonmembers_path, model, splits)
    members = inspect_set(members_path, "members", model, splits[0])
    nonmembers = inspect_set(nonmembers_path, "nonmembers", model, splits[1])
    text = render_policy(model_path, model, members, nonmembers, output.parent, output.name.split(".")[0] or "policy", config, lora, reference)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output


# ----------------------------------------------------------------------------- sources beyond folders, arrays and manifests
# Hugging Face datasets (a parquet file, a folder of shards, a save_to_disk folder, with a split per side), single-file
# checkpoints (--config names the diffusers folder of their architecture) and Hub ids (org/name) found in the local hub
# cache, each written as the policy keys the audit reads.


def model_folder(model: str | Path, config: Path | None) -> Path:
    """Return the folder whose configs describe the model: ``--config`` for a single file, the cached snapshot for org/name."""
    from naa_guard.targets.hubcache import resolve_hub_path
    from naa_guard.targets.single_file import SINGLE_FILE_SUFFIXES

    path = Path(model)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        if config is None:
            raise PolicyError(f"{path} is a single-file checkpoint; give --config FOLDER, a local diffusers folder of the same architecture (e.g. the base it was tuned from).")
        return config
    if config is not None:
        raise PolicyError("--config applies to a single-file checkpoint (.safetensors / .ckpt) only; a diffusers folder carries its own configs.")
    try:
        return Path(resolve_hub_path(str(model), None, "MODEL"))
    except ValueError as exc:
        raise TargetError(str(exc)) from None






def inspect_dataset(source: Path, role: str, model: ModelSummary, split: str | None) -> SetSummary:
    """Return a dataset split's summary: its rows, the sizes of a few images, its captions."""
    from naa_guard.init_policy import SetSummary

    listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize", split=split)
    listed.decode(0, min(4, len(listed)))  # a few rows decoded as the audit would: undecodable rows fail here
    chosen = listed.names[0].split("[")[0]
    captions = sum(caption is not None for caption in listed.captions)
    found = _found_columns(listed.notes)
    return SetSummary(source, f"Hugging Face dataset, split '{chosen}'{', ' + found if found else ''}", len(listed), (), captions, split=chosen)


def inspect_shards(source: Path, role: str, model: ModelSummary) -> SetSummary:
    """Return a webdataset source's summary: its samples, the sizes of a few images, the image field and caption source."""
    from PIL import Image

    listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize")
    listed.decode(0, min(4, len(listed)))  # a few samples decoded as the audit would: undecodable ones fail here
    reader: Any = listed.reader
    sizes = set()
    for row in range(min(16, len(listed))):
        with open_regular(reader.shards[int(reader.shard[row])], DataError, f"The {role} shard", "Fix: point the source at regular .tar files.") as handle:
            handle.seek(int(reader.offset[row]))
            with Image.open(io.BytesIO(handle.read(int(reader.nbytes[row])))) as image:
                sizes.add(f"{image.width}x{image.height}")
    captions = sum(caption is not None for caption in listed.captions)
    return SetSummary(source, f"webdataset shards ({len(listed.files)} shard(s)), {_found_columns(listed.notes)}", len(listed), tuple(sorted(sizes)), captions)


def _found_columns(notes: tuple[str, ...]) -> str:
    """Return where the listing found the images and captions ("images from ..., captions from ..."), from its first note."""
    head = notes[0] if notes else ""
    found = head[head.find("images from ") :] if "images from " in head else ""
    return found[:-1] if found.endswith(")") and found.count("(") < found.count(")") else found


def split_lines(members: SetSummary, nonmembers: SetSummary) -> list[str]:
    """Return the data.split line when a side is a dataset split."""
    sides = {role: s.split for role, s in (("members", members), ("nonmembers", nonmembers)) if s.split is not None}
    if not sides:
        return []
    return [f"  split: {{{', '.join(f'{role}: {json.dumps(name)}' for role, name in sides.items())}}}   # the dataset split each side is read from"]
