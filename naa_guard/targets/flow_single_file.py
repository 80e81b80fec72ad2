"""Single-file SD3 / SD3.5 and Flux checkpoints: ``model.single_file`` configured by ``model.config``, a diffusers folder of the same pipeline.

Two forms, as diffusers' ``from_single_file`` reads them:

- all-in-one: the transformer under ``model.diffusion_model.`` beside, possibly, the VAE
  (``first_stage_model.``) and the text encoders (``text_encoders.clip_l.transformer.``,
  ``text_encoders.clip_g.transformer.`` for SD3, ``text_encoders.t5xxl.transformer.``);
- the transformer alone, in its original layout without a prefix (SD3's ``joint_blocks.*``, Flux's
  ``double_blocks.*`` as ``flux1-dev.safetensors`` ships it).

Each component's weights come from the file where it holds them, else from the config folder's own
weight files (those ``model.variant`` names). Loading is strict: a component read from the file is
converted as diffusers converts it (SD3's transformer, the VAE and the text encoders by diffusers' own
functions; Flux's transformer by :mod:`~naa_guard.targets.flux_layout`, the same layout at any size) and
refused when a converted tensor is missing, extra or reshaped, or a tensor of the file is not read.
The score cache key names the file and every folder file a weight, config or tokenizer came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.flow_info import FlowModelInfo
from naa_guard.targets.variants import component_files, is_weight_file, library_of

if TYPE_CHECKING:
    from naa_guard.targets.flow import FlowTarget

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L, CLIP_G, T5XXL = "text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer.", "text_encoders.t5xxl.transformer."
TEXT_PREFIXES = {"sd3": {"text_encoder": CLIP_L, "text_encoder_2": CLIP_G, "text_encoder_3": T5XXL}, "flux": {"text_encoder": CLIP_L, "text_encoder_2": T5XXL}}
# the first block of each family's transformer in the original layout (a transformer-only file has no prefix)
BLOCK_MARKERS = {"sd3": "joint_blocks.", "flux": "double_blocks."}
FIX = "point model.config at the diffusers folder of the checkpoint's own pipeline (SD3 / SD3.5 or Flux, same sizes), or save the model as a diffusers folder and give it as model.path"


def split_checkpoint(names: list[str], family: str, components: dict[str, Path], file: Path) -> dict[str, str]:
    """Return component -> the prefix its tensors carry in the file, for the components the file holds; raise for a tensor of none."""
    prefixes = {"transformer": TRANSFORMER_PREFIX, "vae": VAE_PREFIX, **TEXT_PREFIXES[family]}
    held = {name: prefix for name, prefix in prefixes.items() if any(key.startswith(prefix) for key in names)}
    bare = [key for key in names if not any(key.startswith(prefix) for prefix in prefixes.values())]
    other = "flux" if family == "sd3" else "sd3"
    if "transformer" not in held and any(key.startswith(BLOCK_MARKERS[family]) for key in bare):
        held["transformer"] = ""  # the transformer alone, in the original layout without a prefix
        bare = []
    if any(key.startswith((BLOCK_MARKERS[other], TRANSFORMER_PREFIX + BLOCK_MARKERS[other])) for key in names):
        kinds = {"sd3": "SD3 (joint_blocks)", "flux": "Flux (double_blocks)"}
        raise TargetError(f"model.single_file {file}: a {kinds[other]} transformer, but model.config describes a {kinds[family]} pipeline; {FIX}.")
    if bare:
        raise TargetError(
            f"model.single_file {file}: {len(bare)} tensor(s) belong to no component of this {family} pipeline (e.g. {', '.join(bare[:3])}); "
            f"expected names under {', '.join(sorted(set(prefixes.values())))} or a transformer alone in its original layout ({BLOCK_MARKERS[family]}*). "
            f"naa-guard reads every tensor of a checkpoint or refuses it; {FIX}."
        )
    if "transformer" not in held:
        raise TargetError(
            f"model.single_file {file}: no transformer weights (no key starts with {TRANSFORMER_PREFIX} or {BLOCK_MARKERS[family]}); a single file must hold the model's transformer. {FIX}."
        )
    missing = [name for name in held if name not in components]
    if missing:
        raise TargetError(f"model.single_file {file}: holds {', '.join(missing)} weights ({', '.join(held[n] for n in missing)}), which the pipeline in model.config does not have; {FIX}.")
    return held


@dataclass(frozen=True)
class FlowSingleFileInfo(FlowModelInfo):
    """An SD3 / Flux pipeline whose transformer (and maybe more) comes from one checkpoint file; the rest from ``root``."""

    single_file: Path | None = None
    held: tuple[str, ...] | None = None  # components whose weights the file holds (None: unknown until a pickle is read)

    def weight_sources(self) -> dict[str, str]:
        """Return where each component's weights come from: the checkpoint file, or its folder's weight files."""
        sources = {}
        for name, folder in self.components.items():
            if name.startswith("tokenizer") or name == "scheduler":
                continue
            if self.held is None or name in self.held:
                sources[name] = f"model.single_file {self.single_file}" if self.held is not None else f"model.single_file {self.single_file} where it holds them, else {folder}"
            else:
                sources[name] = ", ".join(str(p) for p in self._folder_weights(name, folder) if is_weight_file(p))
        return sources

    def identity_files(self) -> list[Path]:
        """Return the checkpoint, every folder's non-weight files, and the weight files of the components the file does not hold."""
        files: list[Path] = []
        for name, folder in self.components.items():
            if self.held is not None and name in self.held:
                files += [p for p in sorted(folder.iterdir()) if p.is_file() and not is_weight_file(p)]
            elif self.held is None:  # a pickle, unread until allowed: every folder weight that could load, so the key covers it
                try:
                    files += component_files(folder, self.variant, name)
                except TargetError:
                    files += [p for p in sorted(folder.iterdir()) if p.is_file() and not is_weight_file(p)]
            elif not name.startswith("tokenizer") and name != "scheduler":
                files += self._folder_weights(name, folder)
            else:
                files += [p for p in sorted(folder.iterdir()) if p.is_file()]
        return [*files, self.single_file] if self.single_file is not None else files

    def _folder_weights(self, name: str, folder: Path) -> list[Path]:
        """Return the folder's files for a component the single file does not hold: its weights must be there."""
        from naa_guard.targets.variants import choose_weights

        try:
            chosen = set(choose_weights(folder, self.variant, library_of(name)).identity)
        except TargetError as exc:
            raise TargetError(f"model.single_file {self.single_file} holds no {name} weights, so they load from model.config: {exc}") from None
        return [p for p in sorted(folder.iterdir()) if p.is_file() and (not is_weight_file(p) or p in chosen)]

    def encoder_files(self) -> list[Path]:
        """Return every identity file: the checkpoint may hold the VAE and text encoders with the transformer."""
        return self.identity_files()

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores."""
        return {**super().identity_material(), "single_file": True}


def flow_single_file_info(info: FlowModelInfo, file: Path, names: list[str] | None) -> FlowSingleFileInfo:
    """Return the single-file info for the config folder's ``info``; ``names``: the file's tensor names (None: a pickle, read at load)."""
    held = None if names is None else tuple(split_checkpoint(names, info.family, info.components, file))
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    single = FlowSingleFileInfo(**fields, single_file=file, held=held)
    single.identity_files()  # the folder weights of the components the file does not hold are chosen now: missing ones are named before loading
    return single


def _strict(module: Any, converted: dict[str, Any], name: str, file: Path, unread: list[str]) -> None:
    """Return None; raise TargetError unless ``converted`` holds exactly the module's tensors and shapes and no tensor went unread."""
    from naa_guard.targets.modelcheck import shape_differences

    missing, extra, reshaped = shape_differences(module, {k: tuple(v.shape) for k, v in converted.items()}, ignore_suffix="position_ids")
    tensors = dict(module.state_dict(keep_vars=True))
    loaded = {id(tensors[key]) for key in converted if key in tensors}
    missing = [key for key in missing if id(tensors.get(key)) not in loaded]  # tied to a converted tensor (T5's encoder.embed_tokens = shared)
    extra += unread
    if missing or extra or reshaped:
        raise TargetError(
            f"model.single_file {file}: its {name} weights do not match the {type(module).__name__} that model.config describes: "
            f"{len(missing)} missing {missing[:5]}, {len(extra)} extra or unread {extra[:5]}, {len(reshaped)} reshaped {reshaped[:5]}. "
            f"A missing tensor would stay random (diffusers only warns); {FIX}."
        )


def _convert(name: str, family: str, module: Any, part: dict[str, Any], prefix: str, file: Path) -> tuple[dict[str, Any], list[str]]:
    """Return (diffusers-named tensors, original names not read) for one component's tensors (names without their prefix)."""
    import torch
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, convert_sd3_transformer_checkpoint_to_diffusers

    if name == "transformer" and family == "flux":
        from naa_guard.targets.flux_layout import convert_flux_transformer

        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        converted, left, unsplit = convert_flux_transformer(part, shapes)
        return converted, left + unsplit
    if name == "transformer":
        rest = dict(part)
        try:
            converted = convert_sd3_transformer_checkpoint_to_diffusers(rest)
        except (KeyError, IndexError) as exc:  # the converter pops every tensor it expects
            raise TargetError(f"model.single_file {file}: its SD3 transformer lacks {exc} (in the original layout); {FIX}.") from None
        return converted, sorted(rest)
    if name == "vae":
        converted = convert_ldm_vae_checkpoint({VAE_PREFIX + k: v for k, v in part.items()}, module.config)
        unread = [] if len(converted) == len(part) else [f"{len(part) - len(converted)} of the file's VAE tensors that the ldm layout does not name"]
        return converted, unread
    converted = dict(part)  # the text encoders: their transformers names under a prefix (diffusers strips it)
    if not hasattr(module, "text_model"):  # transformers' flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    if prefix == CLIP_L and hasattr(module, "text_projection"):
        width = int(module.text_projection.weight.shape[1])
        stored = converted.get("text_projection.weight")
        if stored is not None and not (stored.shape == (width, width) and torch.equal(stored.float(), torch.eye(width))):
            raise TargetError(
                f"model.single_file {file}: its CLIP-L holds a text_projection that is not the identity; diffusers' from_single_file replaces it by the "
                f"identity (as SD3's reference code does when the file has none), so the file and the model diffusers loads differ. Refusing rather than "
                f"guessing: save the model as a diffusers folder and give it as model.path."
            )
        converted["text_projection.weight"] = torch.eye(width)  # SD3's CLIP-L has no projection in the original layout (diffusers: the identity)
    return converted, []


def _module(name: str, folder: Path, family: str, transformers: Any) -> Any:
    """Return the component built from its config in ``folder``, random weights (all replaced, checked strictly)."""
    import diffusers

    from naa_guard.targets.base import read_json

    if name == "transformer":
        cls = getattr(diffusers, "FluxTransformer2DModel" if family == "flux" else "SD3Transformer2DModel")
        return cls.from_config(cls.load_config(folder, local_files_only=True))
    if name == "vae":
        return diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(folder, local_files_only=True))
    class_name = (read_json(folder / "config.json").get("architectures") or ["CLIPTextModel"])[0]
    allowed = {"CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"}
    if class_name not in allowed:
        raise TargetError(f"{folder / 'config.json'}: text encoder class {class_name!r} is not supported; expected one of {', '.join(sorted(allowed))}.")
    cls = getattr(transformers, class_name)
    return cls(cls.config_class.from_pretrained(folder, local_files_only=True))


def load_flow_single_file_target(info: FlowSingleFileInfo, *, allow_pickle: bool, device: str, dtype: str) -> FlowTarget:
    """Return the SD3 / Flux target: the file's components converted strictly, the others from the config folder."""
    from naa_guard.targets.flowload import load_flow_target, load_from_folder
    from naa_guard.targets.single_file import read_checkpoint

    file = info.single_file
    assert file is not None  # set by read_single_file_info
    checkpoint = read_checkpoint(file, allow_pickle)
    held = split_checkpoint(list(checkpoint), info.family, info.components, file)
    if info.held is not None and tuple(held) != info.held:
        raise TargetError(f"model.single_file {file} changed while the audit ran (it held {', '.join(info.held)}, now {', '.join(held)}); run the audit again.")

    def load(name: str, folder: Path, transformers: Any, allow_pickle: bool) -> Any:
        if name not in held:
            return load_from_folder(info, name, folder, transformers, allow_pickle)
        prefix = held[name]
        others = tuple(p for n, p in held.items() if n != name and p)
        part = {key[len(prefix) :]: tensor for key, tensor in checkpoint.items() if key.startswith(prefix) and not key.startswith(others)}
        module = _module(name, folder, info.family, transformers)
        converted, unread = _convert(name, info.family, module, part, prefix, file)
        _strict(module, converted, name, file, unread)
        module.load_state_dict(converted, strict=False)  # exactly the module's tensors (ties and position_ids aside): checked above
        return module.eval()

    return load_flow_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype, load=load)
