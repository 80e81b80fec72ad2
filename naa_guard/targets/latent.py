"""Latent text-to-image models: Stable Diffusion 1.x / 2.x and SDXL pipelines, optionally with a LoRA.

The attacks run in the VAE's latent space, conditioned on each sample's text (SPEC section 3):

- ``encode`` maps images to ``(vae.encode(x).latent_dist.mean - shift_factor) * scaling_factor``
  in float32 (the posterior mean, never a sample, so a gate scores the same every run) and
  captions to the text encoder's hidden states (SDXL: both encoders' penultimate hidden states
  concatenated, the second's pooled embedding and ``add_time_ids``). Both are computed once per
  distinct image and caption and kept by content hash, so further attacks, tuning candidates and
  sweeps reuse them;
- ``predict_noise`` calls the UNet with that condition (no classifier-free guidance) and turns
  v- and sample-predictions into epsilon with the scheduler's own ``alphas_cumprod``.

A LoRA is loaded through the pipeline's own ``load_lora_weights`` (peft) and applied at
``model.lora_scale``; naa-guard then checks that every tensor of the LoRA file reached the
model, since diffusers only warns about keys that match nothing. ``transformers`` and ``peft``
come with the ``naa-guard[sd]`` extra.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.targets.base import PAD_MULTIPLE, PICKLE_SUFFIXES, check_component_weights, offline_environment, raise_if_non_finite, read_json, resolve_device, scheduler_class

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TEXT_WEIGHTS = ("model.safetensors", "model.fp16.safetensors")
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
EXTRA_HINT = 'install them with pip install "naa-guard[sd]"'


@dataclass(frozen=True)
class LatentModelInfo:
    """What can be read from a latent pipeline folder without loading its weights."""

    root: Path
    components: dict[str, Path]  # vae, unet, scheduler, text_encoder, tokenizer (+ text_encoder_2, tokenizer_2)
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    sample_size: int  # image side the VAE takes: unet.sample_size * vae_scale_factor
    in_channels: int  # image channels the VAE takes
    lora: Path | None = None  # the LoRA weight file
    lora_scale: float = 1.0
    takes_text = True  # the data loader's captions condition this model

    @property
    def sdxl(self) -> bool:
        """Return True for a two-text-encoder (SDXL) pipeline."""
        return "text_encoder_2" in self.components

    @property
    def unet_dir(self) -> Path:
        """Return the UNet's folder (named in messages)."""
        return self.components["unet"]

    def identity_files(self) -> list[Path]:
        """Return the files whose content identifies this model: every component's files and the LoRA."""
        files = [p for folder in self.components.values() for p in sorted(folder.iterdir()) if p.is_file()]
        return files + ([self.lora] if self.lora is not None else [])

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: the LoRA scale."""
        return {"lora_scale": self.lora_scale if self.lora is not None else None}


def read_latent_info(root: Path, unet_subfolder: str | None, *, sdxl: bool, lora: Path | None, lora_scale: float) -> LatentModelInfo:
    """Return a latent pipeline folder's components and image geometry, without importing torch."""
    names = ["vae", "unet", "scheduler", "text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if sdxl else [])
    folders = {name: root / ((unet_subfolder or "unet") if name == "unet" else name) for name in names}
    missing = [f"{folder.name}/" for folder in folders.values() if not folder.is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise TargetError(
            f"{root}: this latent text-to-image pipeline is missing {', '.join(missing)} (found: "
            f"{', '.join(present) or 'no subfolders'}). A {'SDXL' if sdxl else 'Stable Diffusion'} folder needs "
            f"{', '.join(f'{name}/' for name in names)}; save the whole pipeline with save_pretrained."
        )
    for name in ("vae", "unet", "text_encoder") + (("text_encoder_2",) if sdxl else ()):
        if not (folders[name] / "config.json").is_file():
            raise TargetError(f"{folders[name]}: no config.json. Save this component with save_pretrained.")
    if not (folders["scheduler"] / "scheduler_config.json").is_file():
        raise TargetError(f"{folders['scheduler']}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    from naa_guard.modelcheck import check_unet_config

    unet_file, vae_file = folders["unet"] / "config.json", folders["vae"] / "config.json"
    unet_config, vae_config = read_json(unet_file), read_json(vae_file)
    if unet_config.get("_class_name") != "UNet2DConditionModel":
        raise TargetError(f"{unet_file}: UNet class {unet_config.get('_class_name')!r}; a latent text-to-image pipeline needs a UNet2DConditionModel.")
    if vae_config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise TargetError(f"{vae_file}: VAE class {vae_config.get('_class_name')!r} is not supported; naa-guard encodes with an AutoencoderKL.")
    if vae_config.get("latents_mean") is not None or vae_config.get("latents_std") is not None:
        raise TargetError(f"{vae_file}: this VAE normalises latents per channel (latents_mean / latents_std), which naa-guard does not apply yet; refusing rather than encoding differently from training.")
    latent_size, latent_channels = check_unet_config(unet_config, unet_file)
    _, image_channels = check_unet_config({"sample_size": 1, **vae_config}, vae_file)
    blocks = vae_config.get("block_out_channels") or [64]
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    if latent_channels != vae_config.get("latent_channels", 4) or unet_config.get("out_channels", latent_channels) != latent_channels:
        raise TargetError(
            f"{unet_file}: in_channels {latent_channels} / out_channels {unet_config.get('out_channels')} do not match the VAE's "
            f"latent_channels {vae_config.get('latent_channels', 4)}; inpainting and depth UNets (extra input channels) are not supported."
        )
    if sdxl and unet_config.get("addition_embed_type") != "text_time":
        raise TargetError(f"{unet_file}: an SDXL pipeline's UNet needs addition_embed_type 'text_time' (found {unet_config.get('addition_embed_type')!r}).")
    for tokenizer in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        if not any(folders[tokenizer].glob("*.json")):
            raise TargetError(f"{folders[tokenizer]}: no tokenizer files (tokenizer_config.json, vocab.json, ...). Save the tokenizer with save_pretrained.")
    return LatentModelInfo(root, folders, unet_config, vae_config, latent_size * 2 ** (len(blocks) - 1), image_channels, find_lora(lora), lora_scale)


def find_lora(lora: Path | None) -> Path | None:
    """Return the LoRA weight file named by ``model.lora`` (a file, or a folder written by save_lora_weights)."""
    if lora is None:
        return None
    path = Path(lora)
    if path.is_dir():
        candidates = [path / LORA_WEIGHTS] if (path / LORA_WEIGHTS).is_file() else sorted(p for p in path.iterdir() if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES)
        if len(candidates) != 1:
            raise TargetError(
                f"model.lora {path}: expected one LoRA weight file ({LORA_WEIGHTS}, as save_lora_weights writes), "
                f"found {', '.join(p.name for p in candidates) or 'none'}. Point model.lora at the file itself."
            )
        path = candidates[0]
    if not path.is_file():
        raise TargetError(f"model.lora {path}: no such file or folder. Point it at the .safetensors file save_lora_weights wrote (relative to the policy file).")
    return path


def _import_sd_libraries() -> Any:
    """Return the transformers module; raise TargetError naming the extra when it or peft is missing."""
    try:
        import peft  # noqa: F401  # load_lora_weights needs it; checked up front so the message is ours
        import transformers
    except ImportError as exc:
        raise TargetError(
            f"auditing a Stable Diffusion / SDXL pipeline needs the transformers and peft packages ({exc}); "
            f"{EXTRA_HINT}. Pixel-space models need neither."
        ) from None
    return transformers


class LatentTarget:
    """A latent diffusion pipeline as the attacks see it: latents in, text-conditioned epsilon out."""

    takes_text = True

    def __init__(self, parts: dict[str, Any], alphas_cumprod: torch.Tensor, prediction_type: str, image_size: int, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        self.vae = parts["vae"].to(device=device, dtype=torch.float32).eval()  # encoding is always float32
        self.unet = parts["unet"].to(device=device, dtype=dtype).eval()
        self.text_encoders = [parts[name].to(device=device, dtype=torch.float32).eval() for name in ("text_encoder", "text_encoder_2") if name in parts]
        self.tokenizers = [parts[name] for name in ("tokenizer", "tokenizer_2") if name in parts]
        self.sdxl = len(self.text_encoders) == 2
        self.device, self.dtype = device, dtype
        self.alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
        self.prediction_type = prediction_type
        self.sample_size = image_size
        self.in_channels = int(self.vae.config.in_channels)
        config = self.vae.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.shift_factor) if getattr(config, "shift_factor", None) is not None else None
        self.forward_calls = 0  # UNet forward passes, one per batch
        self.sample_queries = 0  # samples passed through the UNet, summed over calls
        self.encoded_images = 0  # images passed through the VAE
        self.encoded_texts = 0  # captions passed through the text encoder(s)
        self._latents: dict[str, torch.Tensor] = {}
        self._texts: dict[str, dict[str, torch.Tensor]] = {}

    def forget_encodings(self) -> None:
        """Drop the kept latents and text embeddings."""
        self._latents.clear()
        self._texts.clear()

    def encode(self, images: torch.Tensor, captions: Sequence[str | None]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the images' scaled VAE latent means and their captions' text condition (None = empty)."""
        import torch

        texts = ["" if caption is None else caption for caption in captions]
        pixels = images.to("cpu", torch.float32).contiguous()
        keys = [hashlib.sha256(pixel.numpy().tobytes()).hexdigest() for pixel in pixels]
        new_images = {key: row for row, key in enumerate(keys) if key not in self._latents}
        if new_images:
            latents = self._encode_images(pixels[list(new_images.values())])
            self._latents.update(zip(new_images, latents))
        new_texts = [text for text in dict.fromkeys(texts) if text not in self._texts]
        if new_texts:
            self._texts.update(zip(new_texts, self._encode_texts(new_texts)))
        x0 = torch.stack([self._latents[key] for key in keys]).to(self.device)
        cond = {name: torch.stack([self._texts[text][name] for text in texts]).to(self.device) for name in self._texts[texts[0]]}
        return x0, cond

    def _encode_images(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        import torch

        count = pixels.shape[0]
        padded = torch.cat([pixels, pixels.new_zeros((-count % PAD_MULTIPLE, *pixels.shape[1:]))])
        with torch.inference_mode():
            mean = self.vae.encode(padded.to(self.device)).latent_dist.mean[:count].float()
        if self.shift_factor is not None:
            mean = mean - self.shift_factor
        latents = (mean * self.scaling_factor).cpu()
        bad = ~torch.isfinite(latents.flatten(start_dim=1)).all(dim=1)
        if bad.any():
            error = NonFiniteScoreError(f"the VAE encoded {int(bad.sum())} image(s) to NaN or infinite latents. Check the VAE weights, or use runtime.dtype: float32.")
            raise error
        self.encoded_images += count
        return list(latents)

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        import torch

        count = len(texts)
        batch = texts + [""] * (-count % PAD_MULTIPLE)
        hidden_states, pooled = [], None
        with torch.inference_mode():
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
                tokens = tokenizer(batch, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
                mask = tokens.attention_mask.to(self.device) if getattr(encoder.config, "use_attention_mask", False) else None
                out = encoder(tokens.input_ids.to(self.device), attention_mask=mask, output_hidden_states=self.sdxl)
                hidden_states.append(out.hidden_states[-2] if self.sdxl else out[0])
                pooled = out[0]
        parts = {"encoder_hidden_states": torch.cat(hidden_states, dim=-1)[:count].float().cpu()}
        if self.sdxl:
            size = float(self.sample_size)  # images are prepared at the pipeline's size: original = target, no crop
            parts["text_embeds"] = pooled[:count].float().cpu()
            parts["time_ids"] = torch.tensor([[size, size, 0.0, 0.0, size, size]]).repeat(count, 1)
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the epsilon prediction (float32) at timestep ``t`` given the text condition from ``encode``."""
        import torch

        if not isinstance(cond, dict):
            raise TargetError("a latent text-to-image model needs the condition its encode() returned; got none.")
        count = x.shape[0]
        padding = -count % PAD_MULTIPLE

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        timesteps = torch.full((count + padding,), int(t), device=self.device, dtype=torch.long)
        added = {"text_embeds": pad(cond["text_embeds"]), "time_ids": pad(cond["time_ids"])} if self.sdxl else None
        with torch.inference_mode():
            out = self.unet(pad(x), timesteps, encoder_hidden_states=pad(cond["encoder_hidden_states"]), added_cond_kwargs=added).sample[:count].float()
        self.forward_calls += 1
        self.sample_queries += count
        abar = self.alphas_cumprod[int(t)]
        if self.prediction_type == "v_prediction":
            out = abar.sqrt() * out + (1 - abar).sqrt() * x
        elif self.prediction_type == "sample":
            out = (x - abar.sqrt() * out) / (1 - abar).sqrt()
        raise_if_non_finite(out, t)
        return out


def _text_weight_files(folder: Path, use_safetensors: bool, variant: str | None) -> list[Path]:
    """Return the weight files transformers loads from a text encoder folder (shards included)."""
    from naa_guard.modelcheck import read_json_object

    stem = "model" if use_safetensors else "pytorch_model"
    suffix = ".safetensors" if use_safetensors else ".bin"
    name = f"{stem}{f'.{variant}' if variant else ''}{suffix}"
    if (folder / name).is_file():
        return [folder / name]
    index = folder / f"{name}.index.json"
    if index.is_file():
        return [folder / shard for shard in sorted(set(read_json_object(index).get("weight_map", {}).values()))]
    raise TargetError(f"{folder}: no weight file {name}. Save the text encoder with save_pretrained(..., safe_serialization=True).")


def _check_text_weights(module: Any, files: list[Path], where: Path) -> None:
    """Return None; raise TargetError unless the files hold exactly the text encoder's tensors and shapes.

    ``position_ids`` buffers are ignored: older transformers saved them, newer ones rebuild them.
    """
    from naa_guard.modelcheck import weight_shapes

    stored = {name: shape for name, shape in weight_shapes(files).items() if not name.endswith("position_ids")}
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items() if not name.endswith("position_ids")}
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    reshaped = sorted(n for n in set(expected) & set(stored) if expected[n] != stored[n])
    if missing or unexpected or reshaped:
        raise TargetError(
            f"{where}: the weights ({', '.join(f.name for f in files)}) do not match the {type(module).__name__} its config.json "
            f"describes: missing {missing[:5]}, unexpected {unexpected[:5]}, reshaped {reshaped[:5]}. A missing tensor would "
            f"stay random; check that config.json belongs to these weights, or re-save the text encoder with save_pretrained."
        )


def _load_component(name: str, folder: Path, transformers: Any, allow_pickle: bool) -> Any:
    """Return one pipeline component loaded offline and strictly from its folder."""
    import diffusers

    from naa_guard.modelcheck import check_weights_match, weight_files_for

    if name.startswith("tokenizer"):
        config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        class_name = str(config.get("tokenizer_class") or "CLIPTokenizer")
        if class_name not in ("CLIPTokenizer", "CLIPTokenizerFast"):
            raise TargetError(f"{folder}: tokenizer class {class_name!r} is not supported; Stable Diffusion pipelines use a CLIPTokenizer.")
        return getattr(transformers, class_name).from_pretrained(folder, local_files_only=True)
    config_file = folder / "config.json"
    config = read_json(config_file)
    if name.startswith("text_encoder"):
        class_name = (config.get("architectures") or ["CLIPTextModel"])[0]
        if class_name not in TEXT_ENCODER_CLASSES:
            raise TargetError(f"{config_file}: text encoder class {class_name!r} is not supported; expected one of {', '.join(TEXT_ENCODER_CLASSES)}.")
        use_safetensors, variant = check_component_weights(folder, allow_pickle, TEXT_WEIGHTS)
        module = getattr(transformers, class_name).from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant)
        _check_text_weights(module, _text_weight_files(folder, use_safetensors, variant), folder)
        return module
    # modelcheck.check_config_types is not applied: diffusers annotates these block lists as
    # Tuple[str] (one item) while every real config has several. Sizes were checked on reading.
    cls = diffusers.AutoencoderKL if name == "vae" else diffusers.UNet2DConditionModel
    use_safetensors, variant = check_component_weights(folder, allow_pickle)
    module = cls.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False)
    check_weights_match(module, weight_files_for(folder, use_safetensors, variant), folder)
    return module


def load_latent_target(info: LatentModelInfo, *, allow_pickle: bool, device: str, dtype: str, load: Any = None) -> LatentTarget:
    """Return the loaded latent target (with its LoRA applied), offline, on the requested device and dtype.

    ``load(name, folder, transformers, allow_pickle)`` loads a component (default: strictly from its folder).
    """
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    from naa_guard.modelcheck import check_alphas_cumprod, check_scheduler_config

    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    scheduler_dir = info.components["scheduler"]
    scheduler_config = read_json(scheduler_dir / "scheduler_config.json")
    check_scheduler_config(scheduler_config, scheduler_dir / "scheduler_config.json")
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise TargetError(
            f"{scheduler_dir}: prediction_type {prediction_type!r} is not supported; expected one of "
            f"{', '.join(PREDICTION_TYPES)} (each is converted to the noise prediction the attacks need)."
        )
    verbosity = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # their hints (install accelerate, ...) and bars are noise in a gate's output
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with offline_environment():
            parts = {name: (load or _load_component)(name, folder, transformers, allow_pickle) for name, folder in info.components.items() if name != "scheduler"}
            scheduler = scheduler_class(scheduler_dir, scheduler_config).from_pretrained(scheduler_dir, local_files_only=True)
            if info.lora is not None:
                from naa_guard.targets.lora import apply_lora

                apply_lora(parts, scheduler, info.lora, info.lora_scale, allow_pickle=allow_pickle)
        alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod)
        check_alphas_cumprod(alphas_cumprod, str(scheduler_dir))
        return LatentTarget(parts, alphas_cumprod, prediction_type, info.sample_size, torch_device, torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if "ignore_mismatched_sizes" not in line)
        raise TargetError(f"{info.root}: loading the pipeline failed: {detail} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
        transformers.logging.enable_progress_bar()
