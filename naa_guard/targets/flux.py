"""Flux pipelines (FluxPipeline: CLIP + T5, 2x2-packed latents, image ids, guidance input) as the attacks see them.

The flow conversion of :mod:`~naa_guard.targets.flow` applies unchanged (SPEC section 3b); what
differs is how the transformer is called, exactly as ``FluxPipeline`` calls it (diffusers 0.42):

- the condition is CLIP's ``pooler_output`` (``pooled_projections``) and T5's last hidden states
  over ``max_sequence_length`` tokens (512 unless model.max_sequence_length says), with zero text ids;
- the latent ``(c, h, w)`` is packed into ``h/2 * w/2`` tokens of ``4c`` channels, with image ids
  ``(0, row, col)``; the velocity comes back packed and is unpacked;
- the time input is ``s`` itself (the transformer multiplies by 1000 inside), and a
  guidance-distilled model (``guidance_embeds``) gets the guidance input (3.5, the pipeline's default,
  unless model.guidance says; :func:`~naa_guard.targets.flow_info.with_text_settings` refuses it elsewhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import padding_rows
from naa_guard.targets.flow import FlowTarget, config_value
from naa_guard.targets.flow_info import FLUX_GUIDANCE, T5_TOKENS
from naa_guard.targets.latent import tokenize

if TYPE_CHECKING:
    import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """Return ``(n, c, h, w)`` latents as ``(n, h/2 * w/2, 4c)`` tokens (FluxPipeline._pack_latents)."""
    n, c, h, w = latents.shape
    return latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Return packed tokens as ``(n, c, h, w)`` latents (the inverse of :func:`pack`)."""
    n = tokens.shape[0]
    return tokens.view(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    """Return the ``(h/2 * w/2, 3)`` image ids ``(0, row, col)`` of packed latents."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


class FluxTarget(FlowTarget):
    """A Flux pipeline: latents in, ``e_hat`` out; the transformer sees packed latents at time input s."""

    def __init__(
        self, parts: dict[str, Any], image_size: int, device: torch.device, dtype: torch.dtype, *, config: Any = None, t5: bool | None = None,
        t5_tokens: int = T5_TOKENS["flux"], guidance: float = FLUX_GUIDANCE,
    ) -> None:  # fmt: skip
        """``guidance`` is fed to a guidance-distilled transformer only (``guidance_embeds``), as FluxPipeline feeds guidance_scale."""
        renamed = {("text_encoder_3" if name == "text_encoder_2" else "tokenizer_3" if name == "tokenizer_2" else name): part for name, part in parts.items()}
        super().__init__(renamed, image_size, device, dtype, config=config, t5=True, t5_tokens=t5_tokens)  # Flux always has its T5
        self.guidance = float(guidance) if config_value(self.transformer_config, "guidance_embeds", False) else None

    def probe_tokens(self) -> int:
        """Return the text tokens of a stored condition: T5's."""
        return self.t5_tokens

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return Flux's condition per text: T5's hidden states (``t5_tokens`` tokens) and CLIP's pooled output."""
        import torch

        count = len(texts)
        self.require_text_encoders(count)
        batch = texts + [""] * padding_rows(count)
        with torch.inference_mode():
            clip = self.text_encoders[0](tokenize(self.tokenizers[0], batch).input_ids.to(self.device), output_hidden_states=False).pooler_output
            tokens = self.t5_tokenizer(batch, padding="max_length", max_length=self.t5_tokens, truncation=True, return_tensors="pt")
            states = self.t5(tokens.input_ids.to(self.device), output_hidden_states=False)[0]
        parts = {"encoder_hidden_states": states[:count].float().cpu(), "pooled_projections": clip[:count].float().cpu()}
        if not all(bool(torch.isfinite(tensor).all()) for tensor in parts.values()):
            raise TargetError(f"the text encoders gave NaN or infinite embeddings in {self.dtype} (expected finite). Check their weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def predict_velocity(self, x_s: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the transformer's velocity (float32, unpacked) at ``x_s``, time input s, as FluxPipeline calls it."""
        import torch

        if not isinstance(cond, dict):
            raise TargetError("a Flux pipeline needs the condition its encode() returned; got none.")
        self.require_transformer()
        count, c, h, w = x_s.shape
        padding = padding_rows(count)
        rows = count + padding

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.device, self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        states = cond["encoder_hidden_states"]
        timestep = torch.full((rows,), self.flow_time(t), device=self.device, dtype=torch.float32)
        guidance = None if self.guidance is None else torch.full((rows,), self.guidance, device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            out = self.transformer(
                hidden_states=pad(pack(x_s)), timestep=timestep, guidance=guidance, pooled_projections=pad(cond["pooled_projections"]),
                encoder_hidden_states=pad(states), txt_ids=torch.zeros(states.shape[1], 3, device=self.device, dtype=self.dtype),
                img_ids=image_ids(h, w).to(self.device, self.dtype), return_dict=False,
            )[0][:count].float()  # fmt: skip
        self.forward_calls += 1
        self.sample_queries += count
        return unpack(out, c, h, w)
