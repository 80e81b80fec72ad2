"""Flux 2 [klein] pipelines (Flux2KleinPipeline: Qwen3 text encoder, AutoencoderKLFlux2) as the attacks see them.

The flow conversion of :mod:`~naa_guard.targets.flow` applies unchanged (SPEC section 3b); what
differs is the latent space and how the transformer is called, exactly as ``Flux2KleinPipeline``
does it (diffusers 0.42):

- z0 is the pipeline's own image latent (``_encode_vae_image``): the VAE posterior's mode (its
  mean), patchified 2x2 into ``(4c, h/2, w/2)``, then normalised with the VAE's batch-norm
  statistics, ``(z - bn.running_mean) / sqrt(bn.running_var + batch_norm_eps)``. The pipeline
  denoises in that space and undoes the normalisation before decoding, so the flow path is there
  (no ``scaling_factor`` / ``shift_factor``: this VAE has none);
- the condition: each caption wrapped in the tokenizer's chat template (one user turn, the
  generation prompt, ``enable_thinking=False``), 512 tokens padded, the attention mask given to the
  Qwen3 encoder, and its hidden states 9, 18 and 27 side by side per token; text ids ``(0, 0, 0, l)``;
- the latent tokens are the ``(h/2) (w/2)`` positions in raster order with 4-D ids ``(0, row, col, 0)``;
- the time input is ``s`` itself (the pipeline passes ``timestep / 1000``, the transformer scales
  by 1000 inside), with no guidance input (the pipeline passes ``guidance=None``) and no
  classifier-free guidance (the conditional velocity only, as for the other flow families).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.targets.base import padding_rows
from naa_guard.targets.flow import FlowTarget

if TYPE_CHECKING:
    import torch

KLEIN_TOKENS = 512  # Flux2KleinPipeline's max_sequence_length default
KLEIN_LAYERS = (9, 18, 27)  # its text_encoder_out_layers default: hidden states stacked per token


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """Return ``(n, c, h, w)`` latents as ``(n, 4c, h/2, w/2)`` (Flux2 pipelines' ``_patchify_latents``)."""
    n, c, h, w = latents.shape
    return latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)


def tokens_of(latents: torch.Tensor) -> torch.Tensor:
    """Return ``(n, c, h, w)`` as ``(n, h w, c)`` tokens in raster order (``_pack_latents``)."""
    n, c, h, w = latents.shape
    return latents.reshape(n, c, h * w).permute(0, 2, 1)


def latents_of(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Return raster-order tokens ``(n, h w, c)`` as ``(n, c, h, w)`` (the inverse of :func:`tokens_of`)."""
    n, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(n, c, h, w)


def latent_ids(h: int, w: int) -> torch.Tensor:
    """Return the ``(h w, 4)`` ids ``(0, row, col, 0)`` of the latent tokens (``_prepare_latent_ids``)."""
    import torch

    return torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))


def text_ids(length: int) -> torch.Tensor:
    """Return the ``(length, 4)`` ids ``(0, 0, 0, l)`` of the text tokens (``_prepare_text_ids``)."""
    import torch

    return torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))


def klein_tokens(tokenizer: Any, texts: list[str]) -> Any:
    """Return the input ids and attention mask Flux2KleinPipeline gives its Qwen3 encoder for ``texts``."""
    import torch

    ids, masks = [], []
    for text in texts:
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=False)
        tokens = tokenizer(chat, return_tensors="pt", padding="max_length", truncation=True, max_length=KLEIN_TOKENS)
        ids.append(tokens["input_ids"])
        masks.append(tokens["attention_mask"])
    return torch.cat(ids), torch.cat(masks)


class Flux2KleinTarget(FlowTarget):
    """A Flux 2 [klein] pipeline: patchified, batch-norm-normalised latents in, ``e_hat`` out; time input s, no guidance."""

    def __init__(self, parts: dict[str, Any], image_size: int, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        encoder, tokenizer = parts["text_encoder"], parts["tokenizer"]
        super().__init__({name: part for name, part in parts.items() if name not in ("text_encoder", "tokenizer")}, image_size, device, dtype)
        self.qwen = encoder.to(device=device, dtype=dtype).eval()
        self.qwen_tokenizer = tokenizer
        config = self.vae.config
        self.bn_mean = self.vae.bn.running_mean.detach().to("cpu", torch.float32).view(1, -1, 1, 1)
        self.bn_std = torch.sqrt(self.vae.bn.running_var.detach().to("cpu", torch.float32).view(1, -1, 1, 1) + float(config.batch_norm_eps))

    def probe_inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Return the probe's ``(x0, cond)``: the empty caption's (this target always holds its Qwen3 encoder)."""
        return self.encode(images, [""])

    def _encode_images(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Return each image's latent as the pipeline's ``_encode_vae_image``: mode, 2x2 patchify, batch-norm normalised."""
        import torch

        from naa_guard.targets.latent import ENCODE_BATCH

        count, modes = pixels.shape[0], []
        with torch.inference_mode():
            for first in range(0, count, ENCODE_BATCH):
                modes.append(self.vae.encode(pixels[first : first + ENCODE_BATCH].to(self.device)).latent_dist.mode().float().cpu())
        latents = (patchify(torch.cat(modes)) - self.bn_mean) / self.bn_std
        bad = ~torch.isfinite(latents.flatten(start_dim=1)).all(dim=1)
        if bad.any():
            raise NonFiniteScoreError(f"the VAE encoded {int(bad.sum())} image(s) to NaN or infinite latents. Check the VAE weights (and its bn running statistics), or use runtime.dtype: float32.")
        self.encoded_images += count
        return list(latents)

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return the Qwen3 encoder's hidden states 9, 18, 27 side by side per token (512 chat-templated tokens, masked)."""
        import torch

        count = len(texts)
        batch = texts + [""] * padding_rows(count)
        ids, mask = klein_tokens(self.qwen_tokenizer, batch)
        with torch.inference_mode():
            out = self.qwen(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True, use_cache=False)
            states = torch.stack([out.hidden_states[k] for k in KLEIN_LAYERS], dim=1)[:count].float().cpu()
        n, layers, length, width = states.shape
        states = states.permute(0, 2, 1, 3).reshape(n, length, layers * width)
        if not bool(torch.isfinite(states).all()):
            raise NonFiniteScoreError(f"the Qwen3 text encoder gave NaN or infinite embeddings in {self.dtype} (expected finite). Check its weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{"encoder_hidden_states": states[i]} for i in range(count)]

    def predict_velocity(self, x_s: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the transformer's velocity (float32, as latents) at ``x_s``, time input s, guidance None, as Flux2KleinPipeline calls it."""
        import torch

        if not isinstance(cond, dict):
            raise TargetError("a Flux 2 pipeline needs the condition its encode() returned; got none.")
        count, _, h, w = x_s.shape
        padding = padding_rows(count)

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.device, self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        states = cond["encoder_hidden_states"]
        timestep = torch.full((count + padding,), self.flow_time(t), device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            out = self.transformer(
                hidden_states=pad(tokens_of(x_s)), timestep=timestep, guidance=None, encoder_hidden_states=pad(states),
                txt_ids=text_ids(states.shape[1]).to(self.device), img_ids=latent_ids(h, w).to(self.device), return_dict=False,
            )[0][:count, : h * w].float()  # fmt: skip
        self.forward_calls += 1
        self.sample_queries += count
        return latents_of(out, h, w)
