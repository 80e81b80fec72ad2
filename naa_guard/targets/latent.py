"""Latent text-to-image models: Stable Diffusion 1.x / 2.x and SDXL pipelines, optionally with a LoRA.

The attacks run in the VAE's latent space, conditioned on each sample's text (SPEC section 3):

- ``encode`` maps images to ``(vae.encode(x).latent_dist.mean - shift_factor) * scaling_factor``
  in float32 (the posterior mean, never a sample, so a gate scores the same every run) and
  captions to the text encoder's hidden states (SDXL: both encoders' penultimate hidden states
  concatenated, the second's pooled embedding and ``add_time_ids``). The audit stores them per
  chunk (:mod:`naa_guard.scoring.encodings`), so further attacks, tuning candidates, sweeps and
  new processes reuse them; the target itself keeps none. The VAE takes one image per call
  (``ENCODE_BATCH``), so its memory is one image's whatever the batch, chunk or set;
- ``predict_noise`` calls the UNet with that condition (no classifier-free guidance) and turns
  v- and sample-predictions into epsilon with the scheduler's own ``alphas_cumprod``.

A LoRA is loaded through the pipeline's own ``load_lora_weights`` (peft) and applied at
``model.lora_scale``; naa-guard then checks that every tensor of the LoRA file reached the
model, since diffusers only warns about keys that match nothing, and that every layer applies the
alpha / rank the file declares (``targets/lorastrength.py``). ``transformers`` and ``peft``
come with the ``naa-guard[sd]`` extra.
"""

from __future__ import annotations

import hashlib
from functools import partial
from typing import TYPE_CHECKING, Any

from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.targets.base import offline_environment, padding_rows, raise_if_non_finite, read_json, resolve_device, scheduler_class
from naa_guard.targets.components import load_component
from naa_guard.targets.latent_info import EXTRA_HINT, LatentModelInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Images per VAE encoder call. One image at a time, unpadded: the VAE's activations are the largest
# tensors of a latent audit (about 0.6 GB per 512x512 image on the CPU, four times that at 1024 px),
# so its memory is one image's whatever runtime.batch_size, the chunk or the set; and every image is
# encoded in a call of the same shape, so its latent never depends on its neighbours or the batch
# size (scores stay independent of runtime.batch_size). The VAE runs once per image, the UNet once
# per image and query, so the smaller encoder batch costs little time. No tiling: a tiled encode
# blends overlapping tiles and gives other latents than the whole image's.
ENCODE_BATCH = 1


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


def tokenize(tokenizer: Any, texts: list[str]) -> Any:
    """Return the token ids and attention mask the text encoder gets for ``texts`` (padded to the tokenizer's length)."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")


def uses_attention_mask(config: Any) -> bool:
    """Return whether the text encoder of this config (an object or a config.json dict) is given the attention mask."""
    return bool(config.get("use_attention_mask", False) if isinstance(config, dict) else getattr(config, "use_attention_mask", False))


class LatentTarget:
    """A latent diffusion pipeline as the attacks see it: latents in, text-conditioned epsilon out."""

    takes_text = True

    def __init__(self, parts: dict[str, Any], alphas_cumprod: torch.Tensor, prediction_type: str, image_size: int, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        self.vae = parts["vae"].to(device=device, dtype=torch.float32).eval()  # encoding is always float32
        self.unet = parts["unet"].to(device=device, dtype=dtype).eval() if "unet" in parts else None  # None: a flow target's text-encoder phase
        self.text_encoders = [parts[name].to(device=device, dtype=dtype).eval() for name in ("text_encoder", "text_encoder_2") if name in parts]  # as the UNet
        self.tokenizers = [parts[name] for name in ("tokenizer", "tokenizer_2") if name in parts]
        self.sdxl = len(self.text_encoders) == 2
        self.device, self.dtype = device, dtype
        self.alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
        self.prediction_type = prediction_type
        self.sample_size = image_size
        self.in_channels = int(self.vae.config.in_channels)
        config = self.vae.config
        self.scaling_factor = float(getattr(config, "scaling_factor", 1.0))  # Flux 2's VAE has none (it normalises by batch norm)
        self.shift_factor = float(config.shift_factor) if getattr(config, "shift_factor", None) is not None else None
        self.forward_calls = 0  # UNet forward passes, one per batch
        self.sample_queries = 0  # samples passed through the UNet, summed over calls
        self.encoded_images = 0  # images passed through the VAE
        self.encoded_texts = 0  # captions passed through the text encoder(s)

    def encode(self, images: torch.Tensor, captions: Sequence[str | None]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the images' scaled VAE latent means and their captions' text condition (None = empty)."""
        x0 = self.encode_images(images).to(self.device)
        table, rows = self.encode_captions(captions)
        return x0, self.condition(table, rows)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return the images' scaled VAE latent means, float32 on the CPU (an image repeated in the batch is encoded once)."""
        import torch

        pixels = images.to("cpu", torch.float32).contiguous()
        keys = [hashlib.sha256(pixel.numpy().tobytes()).hexdigest() for pixel in pixels]
        first: dict[str, int] = {}  # each distinct image's first row, in order of appearance
        for row, key in enumerate(keys):
            first.setdefault(key, row)
        latents = dict(zip(first, self._encode_images(pixels[list(first.values())])))
        return torch.stack([latents[key] for key in keys])

    def encode_captions(self, captions: Sequence[str | None]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Return the text condition of each distinct caption (None = empty; float32 on the CPU) and each sample's row in it."""
        import torch

        texts = ["" if caption is None else caption for caption in captions]
        distinct = {text: row for row, text in enumerate(dict.fromkeys(texts))}
        encoded = self._encode_texts(list(distinct))
        table = {name: torch.stack([row[name] for row in encoded]) for name in encoded[0]}
        return table, torch.tensor([distinct[text] for text in texts], dtype=torch.long)

    def condition(self, table: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the UNet's condition for samples whose captions are at ``rows`` of ``table`` (from encode_captions)."""
        return {name: values[rows].to(self.device) for name, values in table.items()}

    def _encode_images(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Return each image's scaled latent mean, the VAE called on ENCODE_BATCH images at a time (no padding)."""
        import torch

        count, means = pixels.shape[0], []
        with torch.inference_mode():
            for first in range(0, count, ENCODE_BATCH):
                batch = pixels[first : first + ENCODE_BATCH].to(self.device)
                means.append(self._vae_latent(batch).float().cpu())
                del batch
        mean = torch.cat(means)
        if self.shift_factor is not None:
            mean = mean - self.shift_factor
        latents = mean * self.scaling_factor
        bad = ~torch.isfinite(latents.flatten(start_dim=1)).all(dim=1)
        if bad.any():
            error = NonFiniteScoreError(f"the VAE encoded {int(bad.sum())} image(s) to NaN or infinite latents. Check the VAE weights, or use runtime.dtype: float32.")
            raise error
        self.encoded_images += count
        return list(latents)

    def _vae_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return the VAE's unscaled latent of the images: an AutoencoderKL's posterior mean (never a sample)."""
        return self.vae.encode(pixels).latent_dist.mean

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        import torch

        count = len(texts)
        batch = texts + [""] * padding_rows(count)
        hidden_states, pooled = [], None
        with torch.inference_mode():
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
                tokens = tokenize(tokenizer, batch)
                mask = tokens.attention_mask.to(self.device) if uses_attention_mask(encoder.config) else None
                out = encoder(tokens.input_ids.to(self.device), attention_mask=mask, output_hidden_states=self.sdxl)
                hidden_states.append(out.hidden_states[-2] if self.sdxl else out[0])
                pooled = out[0]
        parts = {"encoder_hidden_states": torch.cat(hidden_states, dim=-1)[:count].float().cpu()}
        if self.sdxl:
            size = float(self.sample_size)  # images are prepared at the pipeline's size: original = target, no crop
            parts["text_embeds"] = pooled[:count].float().cpu()
            parts["time_ids"] = torch.tensor([[size, size, 0.0, 0.0, size, size]]).repeat(count, 1)
        if not all(bool(torch.isfinite(tensor).all()) for tensor in parts.values()):  # a half-precision encoder can overflow
            raise NonFiniteScoreError(f"the text encoder gave NaN or infinite embeddings in {self.dtype} (expected finite). Check its weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the epsilon prediction (float32) at timestep ``t`` given the text condition from ``encode``."""
        import torch

        if not isinstance(cond, dict):
            raise TargetError("a latent text-to-image model needs the condition its encode() returned; got none.")
        count = x.shape[0]
        padding = padding_rows(count)

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        timesteps = torch.full((count + padding,), int(t), device=self.device, dtype=torch.long)
        with torch.inference_mode():
            out = self._denoiser_output(pad(x), timesteps, cond, pad)[:count].float()
        self.forward_calls += 1
        self.sample_queries += count
        abar = self.alphas_cumprod[int(t)]
        if self.prediction_type == "v_prediction":
            out = abar.sqrt() * out + (1 - abar).sqrt() * x
        elif self.prediction_type == "sample":
            out = (x - abar.sqrt() * out) / (1 - abar).sqrt()
        raise_if_non_finite(out, t)
        return out

    def _denoiser_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor], pad: Any) -> torch.Tensor:
        """Return the UNet's raw output for the padded batch ``x`` (``pad`` pads a condition tensor the same way)."""
        added = {"text_embeds": pad(cond["text_embeds"]), "time_ids": pad(cond["time_ids"])} if self.sdxl else None
        return self.unet(x, timesteps, encoder_hidden_states=pad(cond["encoder_hidden_states"]), added_cond_kwargs=added).sample


def load_latent_target(info: LatentModelInfo, *, allow_pickle: bool, device: str, dtype: str, load: Any = None) -> LatentTarget:
    """Return the loaded latent target (with its LoRA applied), offline, on the requested device and dtype.

    ``load(name, folder, transformers, allow_pickle)`` loads a component (default: strictly from its folder).
    """
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    from naa_guard.targets.modelcheck import check_alphas_cumprod, check_scheduler_config

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
            load = load or partial(load_component, variant=info.variant)
            parts = {name: load(name, folder, transformers, allow_pickle) for name, folder in info.components.items() if name != "scheduler"}
            scheduler = scheduler_class(scheduler_dir, scheduler_config).from_pretrained(scheduler_dir, local_files_only=True)
            if info.lora is not None:
                from naa_guard.targets.lora import apply_lora

                apply_lora(parts, scheduler, info.lora, info.lora_scale, allow_pickle=allow_pickle)
        alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod)
        check_alphas_cumprod(alphas_cumprod, str(scheduler_dir))
        return LatentTarget(parts, alphas_cumprod, prediction_type, info.sample_size, torch_device, torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        if "weights_only" in str(exc):  # torch's advice to unpickle with weights_only=False: never passed on
            from naa_guard.targets.modelcheck import pickle_load_error

            raise pickle_load_error(info.root, exc) from None
        from naa_guard.targets.loaderror import load_error_detail

        raise TargetError(f"{info.root}: loading the pipeline failed: {load_error_detail(exc)} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
        transformers.logging.enable_progress_bar()
