"""Flow-matching transformer pipelines (Stable Diffusion 3 / 3.5) as the attacks see them (SPEC section 3b).

One conversion serves every attack. The flow path ``x_s = (1 - s) z0 + s e`` is the DDPM path
``x_t = sqrt(abar) z0 + sqrt(1 - abar) e`` scaled by ``r = sqrt((1 - s)^2 + s^2)``, with
``abar = (1 - s)^2 / r^2``. So the target exposes that ``alphas_cumprod`` on the grid
``s = t / 1000`` (t = 0..999) and ``predict_noise(x, t)`` feeds the transformer ``x_s = r x`` at
time input ``1000 s`` (SD3's convention: ``StableDiffusion3Pipeline`` passes the scheduler's
``sigmas * 1000``) and returns ``e_hat = x_s + (1 - s) v_hat``. Under it the attacks' closed-form
noising is the flow path, and the deterministic DDIM step *is* the Euler step of the flow ODE
(``x_s' = x_s + (s' - s) v_hat``, exactly), so NAA and SecMI follow the flow ODE. Two attacks
ask the target for what differs from the DDPM reading, without naming the family:

- SimA feeds the CLEAN latent at s (``predict_noise_clean``: ``e_hat = z0 + (1 - s) v_hat(z0, s)``);
- loss is the flow-matching loss ``|v_hat - (e - z0)|^2 = |e_hat - e|^2 / (1 - s)^2`` (``loss_weight``).

A target may hold only some of the pipeline (:func:`~naa_guard.targets.flowload.load_flow_target`'s
``part``): the VAE and text encoders (it encodes, ``predict_noise`` is an error) or the VAE and the
transformer (it scores the stored encodings, ``encode_captions`` is an error). An audit encodes every
caption with the first, releases it, then loads the second (:mod:`naa_guard.scoring.models`): T5-XXL
and a 2B-12B transformer are never in memory together. A missing embedding is never made up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import padding_rows, raise_if_non_finite
from naa_guard.targets.flow_info import FLOW_STEPS, PARAMETRIZATION, T5_TOKENS
from naa_guard.targets.latent import LatentTarget, tokenize

if TYPE_CHECKING:
    import torch


def config_value(config: Any, key: str, default: Any) -> Any:
    """Return ``key`` of a model config (a loaded model's config object or its config.json dict), else ``default``."""
    value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    return default if value is None else value


def flow_alphas_cumprod(steps: int = FLOW_STEPS) -> torch.Tensor:
    """Return ``(1 - s)^2 / ((1 - s)^2 + s^2)`` at ``s = t / steps``, t = 0..steps-1 (float64)."""
    import torch

    s = torch.arange(steps, dtype=torch.float64) / steps
    return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)


class FlowTarget(LatentTarget):
    """An SD3 pipeline: latents in, text-conditioned ``e_hat`` out (velocity converted at the model's own s)."""

    parametrization = PARAMETRIZATION

    def __init__(
        self, parts: dict[str, Any], image_size: int, device: torch.device, dtype: torch.dtype, *, config: Any = None, t5: bool | None = None,
        t5_tokens: int = T5_TOKENS["sd3"],
    ) -> None:  # fmt: skip
        """``parts`` without ``transformer`` (then ``config``, its config, is given) or without text encoders (then ``t5`` says whether the pipeline has one).

        ``t5_tokens``: the pipeline's max_sequence_length (model.max_sequence_length); without a T5, that many zero tokens.
        """
        import torch

        if "transformer" in parts:
            parts = {**parts, "unet": parts["transformer"]}
        super().__init__(parts, flow_alphas_cumprod().float(), "flow", image_size, device, dtype)
        self.transformer = self.unet
        self.sdxl = False
        if self.transformer is None and config is None:
            raise TargetError("a flow target without its transformer needs the transformer's config")
        self.transformer_config = self.transformer.config if self.transformer is not None else config
        self.joint_attention_dim = int(config_value(self.transformer_config, "joint_attention_dim", 4096))
        self.t5 = parts["text_encoder_3"].to(device=device, dtype=dtype).eval() if "text_encoder_3" in parts else None
        self.has_t5 = ("text_encoder_3" in parts) if t5 is None else t5  # the pipeline's, loaded here or not
        self.t5_tokenizer = parts.get("tokenizer_3")
        self.t5_tokens = int(t5_tokens)
        self._s = torch.arange(FLOW_STEPS, dtype=torch.float64) / FLOW_STEPS

    def require_text_encoders(self, count: int) -> None:
        """Return None; raise TargetError when this target holds no text encoders (the transformer's part of the pipeline).

        Its captions were to be encoded, and stored, before the transformer loaded; a caption
        without a stored embedding is an error, never given another embedding.
        """
        if not self.text_encoders or (self.has_t5 and self.t5 is None):
            raise TargetError(
                f"{count} caption(s) have no stored text embedding, and this model's text encoders were released before its "
                f"transformer loaded (expected every caption the audit scores to be encoded first). naa-guard never scores a "
                f"caption with another embedding. Re-run the audit; if this repeats, report it with the policy (a bug)."
            )

    def probe_inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the probe's ``(x0, cond)``: the empty caption's condition, or zeros of its shape when the text encoders are not here."""
        import torch

        if self.text_encoders:
            return self.encode(images, [""])
        tokens = self.probe_tokens()
        pooled = int(config_value(self.transformer_config, "pooled_projection_dim", 2048))
        zeros = {"encoder_hidden_states": torch.zeros(1, tokens, self.joint_attention_dim), "pooled_projections": torch.zeros(1, pooled)}
        return self.encode_images(images).to(self.device), self.condition(zeros, torch.zeros(images.shape[0], dtype=torch.long))

    def probe_tokens(self) -> int:
        """Return the text tokens of a stored condition: both CLIPs' (and T5's) for SD3."""
        return int(self.tokenizers[0].model_max_length) + (self.t5_tokens if self.has_t5 else 0)

    def flow_time(self, t: int) -> float:
        """Return s for the attack timestep t (s = t / 1000)."""
        if not 0 <= int(t) < FLOW_STEPS:
            raise TargetError(f"timestep {t} is outside the flow grid 0..{FLOW_STEPS - 1} (s = t / {FLOW_STEPS}).")
        return float(self._s[int(t)])

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return SD3's condition per text: both CLIPs' penultimate states side by side, padded to joint_attention_dim, then T5's (if any); both pooled embeddings."""
        import torch

        count = len(texts)
        self.require_text_encoders(count)
        batch = texts + [""] * padding_rows(count)
        states, pooled = [], []
        with torch.inference_mode():
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
                tokens = tokenize(tokenizer, batch)
                out = encoder(tokens.input_ids.to(self.device), output_hidden_states=True)
                states.append(out.hidden_states[-2])
                pooled.append(out[0])
            if self.has_t5:  # as the pipeline: max_sequence_length tokens, special tokens added, no mask
                tokens = self.t5_tokenizer(batch, padding="max_length", max_length=self.t5_tokens, truncation=True, add_special_tokens=True, return_tensors="pt")
                t5_states = self.t5(tokens.input_ids.to(self.device))[0][:count].float().cpu()
        clip = torch.cat(states, dim=-1)[:count].float().cpu()
        clip = torch.nn.functional.pad(clip, (0, self.joint_attention_dim - clip.shape[-1]))
        if self.has_t5:
            clip = torch.cat([clip, t5_states], dim=1)
        parts = {"encoder_hidden_states": clip, "pooled_projections": torch.cat(pooled, dim=-1)[:count].float().cpu()}
        if not all(bool(torch.isfinite(tensor).all()) for tensor in parts.values()):
            raise TargetError(f"the text encoders gave NaN or infinite embeddings in {self.dtype} (expected finite). Check their weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return ``e_hat`` at the flow point ``x_s = r x`` (``x`` on the equivalent DDPM path at t)."""
        s = self.flow_time(t)
        return self.predict_noise_clean(x * ((1 - s) ** 2 + s**2) ** 0.5, t, cond)

    def predict_noise_clean(self, x_s: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return ``e_hat = x_s + (1 - s) v_hat(x_s, s)`` with ``x_s`` fed to the transformer as it is (SimA's clean input)."""
        return self._noise_from_velocity(x_s, self.predict_velocity(x_s, t, cond), t)

    def require_transformer(self) -> None:
        """Return None; raise TargetError when this target holds only the text encoders and VAE."""
        if self.transformer is None:
            raise TargetError("this flow target holds the text encoders and VAE only (the encoding phase); its transformer loads after they are released.")

    def loss_weight(self, t: int) -> float:
        """Return ``1 / (1 - s)^2``: ``|e_hat - e|^2`` times this is the flow-matching loss ``|v_hat - (e - z0)|^2``."""
        s = self.flow_time(t)
        return 1.0 / (1 - s) ** 2

    def _noise_from_velocity(self, x_s: torch.Tensor, velocity: torch.Tensor, t: int) -> torch.Tensor:
        s = self.flow_time(t)
        out = x_s.float() + (1 - s) * velocity
        raise_if_non_finite(out, t)
        return out

    def predict_velocity(self, x_s: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the transformer's velocity (float32) at ``x_s``, time input ``1000 s`` (SD3), no guidance."""
        import torch

        if not isinstance(cond, dict):
            raise TargetError("an SD3 pipeline needs the condition its encode() returned; got none.")
        self.require_transformer()
        count = x_s.shape[0]
        padding = padding_rows(count)

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.device, self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        states = cond["encoder_hidden_states"]
        if not self.has_t5:  # no T5: zeros, as diffusers feeds them (stored encodings keep the CLIP part only)
            states = torch.cat([states, states.new_zeros((count, self.t5_tokens, self.joint_attention_dim))], dim=1)
        timestep = torch.full((count + padding,), FLOW_STEPS * self.flow_time(t), device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            out = self.transformer(
                hidden_states=pad(x_s), timestep=timestep, encoder_hidden_states=pad(states),
                pooled_projections=pad(cond["pooled_projections"]), return_dict=False,
            )[0][:count].float()  # fmt: skip
        self.forward_calls += 1
        self.sample_queries += count
        return out
