"""PixArt-Sigma / PixArt-Alpha pipelines as the attacks see them: a latent target of the UNet families.

The DDPM reading of :class:`~naa_guard.targets.latent.LatentTarget` applies unchanged (the
scheduler's ``alphas_cumprod``, integer timesteps, epsilon / v / sample converted to epsilon);
what differs is the denoiser's call, exactly as ``PixArtSigmaPipeline`` / ``PixArtAlphaPipeline``
make it (diffusers 0.42):

- the caption is lower-cased and stripped (``_text_preprocessing`` with ``clean_caption=False``,
  ``encode_prompt``'s default), tokenized by T5 to ``max_sequence_length`` tokens (Sigma 300,
  Alpha 120) with special tokens, and encoded WITH its attention mask; the transformer gets the
  hidden states and the same mask (``encoder_attention_mask``);
- the timestep is the integer t; ``added_cond_kwargs`` carries the resolution ``(H, W)`` of the
  image and the aspect ratio ``H / W`` for Alpha at sample_size 128, else None;
- a learned-sigma transformer (``out_channels = 2 * in_channels``) returns the prediction in its
  first half, which is kept (the pipeline's ``noise_pred.chunk(2, dim=1)[0]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.targets.base import check_component_weights, offline_environment, padding_rows, read_json, resolve_device, scheduler_class
from naa_guard.targets.latent import LatentTarget, _import_sd_libraries
from naa_guard.targets.pixart_info import PixArtModelInfo

if TYPE_CHECKING:
    import torch



def prepare_captions(texts: list[str]) -> list[str]:
    """Return the captions as PixArt's encode_prompt feeds them to T5 (``text.lower().strip()``)."""
    return [text.lower().strip() for text in texts]


def tokenize_t5(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    """Return T5's token ids and attention mask for the captions, as PixArt's encode_prompt makes them."""
    return tokenizer(prepare_captions(texts), padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True, return_tensors="pt")


class PixArtTarget(LatentTarget):
    """A PixArt pipeline: latents in, T5-conditioned epsilon out (the DDPM reading of the UNet families)."""

    def __init__(self, parts: dict[str, Any], alphas_cumprod: torch.Tensor, info: PixArtModelInfo, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__({**parts, "unet": parts["transformer"]}, alphas_cumprod, info.prediction_type, info.sample_size, device, dtype)
        self.transformer = self.unet
        self.max_sequence_length = info.max_sequence_length
        self.size_conditioned = info.size_conditioned
        self.latent_channels = int(self.transformer.config.in_channels)
        self.learned_sigma = int(self.transformer.config.out_channels) == 2 * self.latent_channels

    def tokenize_texts(self, tokenizer: Any, texts: list[str]) -> Any:
        """Return what the T5 encoder gets for the texts (the empty-caption check asks for it)."""
        return tokenize_t5(tokenizer, texts, self.max_sequence_length)

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return T5's last hidden states and the attention mask per caption (encode_prompt's prompt_embeds, prompt_attention_mask)."""
        import torch

        count = len(texts)
        batch = texts + [""] * padding_rows(count)
        tokens = self.tokenize_texts(self.tokenizers[0], batch)
        mask = tokens.attention_mask.to(self.device)
        with torch.inference_mode():
            states = self.text_encoders[0](tokens.input_ids.to(self.device), attention_mask=mask)[0]
        parts = {"encoder_hidden_states": states[:count].float().cpu(), "encoder_attention_mask": mask[:count].float().cpu()}
        if not bool(torch.isfinite(parts["encoder_hidden_states"]).all()):
            raise NonFiniteScoreError(f"the T5 text encoder gave NaN or infinite embeddings in {self.dtype} (expected finite). Check its weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def _denoiser_output(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor], pad: Any) -> torch.Tensor:
        """Return the transformer's prediction as the PixArt pipeline reads it (the first half of a learned-sigma output)."""
        import torch

        if "encoder_attention_mask" not in cond:
            raise TargetError("a PixArt pipeline needs the T5 condition and attention mask its encode() returned; got another condition.")
        added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if self.size_conditioned:  # PixArtAlphaPipeline at sample_size 128: the image's (H, W) and H / W, in the embeddings' dtype
            rows = x.shape[0]
            added = {
                "resolution": torch.tensor([[float(self.sample_size), float(self.sample_size)]], device=self.device, dtype=self.dtype).repeat(rows, 1),
                "aspect_ratio": torch.ones((rows, 1), device=self.device, dtype=self.dtype),
            }  # fmt: skip
        out = self.transformer(
            x, encoder_hidden_states=pad(cond["encoder_hidden_states"]), encoder_attention_mask=pad(cond["encoder_attention_mask"]),
            timestep=timesteps, added_cond_kwargs=added, return_dict=False,
        )[0]  # fmt: skip
        return out.chunk(2, dim=1)[0] if self.learned_sigma else out


def load_pixart_target(info: PixArtModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> PixArtTarget:
    """Return the loaded PixArt target, offline and strictly (every weight from its files), on the device and dtype."""
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    from naa_guard.targets.components import load_component
    from naa_guard.targets.modelcheck import check_alphas_cumprod, check_weights_match
    from naa_guard.targets.variants import weight_files_for

    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    folder, scheduler_dir = info.components["transformer"], info.components["scheduler"]
    verbosity = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        with offline_environment():
            # the T5 encoder and tokenizer load under the names that select the T5 classes (SD3's text_encoder_3)
            kind = {"text_encoder": "text_encoder_3", "tokenizer": "tokenizer_3"}
            parts = {name: load_component(kind.get(name, name), path, transformers, allow_pickle, None, torch_dtype) for name, path in info.components.items() if name not in ("transformer", "scheduler")}
            use_safetensors, variant = check_component_weights(folder, allow_pickle)
            transformer = diffusers.PixArtTransformer2DModel.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False)
            check_weights_match(transformer, weight_files_for(folder, use_safetensors, variant), folder)
            config = read_json(scheduler_dir / "scheduler_config.json")
            scheduler = scheduler_class(scheduler_dir, config).from_pretrained(scheduler_dir, local_files_only=True)
        alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod)
        check_alphas_cumprod(alphas_cumprod, str(scheduler_dir))
        return PixArtTarget({**parts, "transformer": transformer}, alphas_cumprod, info, torch_device, torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        if "weights_only" in str(exc):  # torch's advice to unpickle with weights_only=False: never passed on
            from naa_guard.targets.modelcheck import pickle_load_error

            raise pickle_load_error(info.root, exc) from None
        from naa_guard.targets.loaderror import load_error_detail

        raise TargetError(f"{info.root}: loading the {info.pipeline} failed: {load_error_detail(exc)} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
