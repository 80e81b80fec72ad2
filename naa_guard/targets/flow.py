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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import padding_rows, raise_if_non_finite
from naa_guard.targets.flow_info import FLOW_STEPS, PARAMETRIZATION, T5_TOKENS
from naa_guard.targets.latent import LatentTarget, tokenize

if TYPE_CHECKING:
    import torch

SHARDED_INDEX = "diffusion_pytorch_model.safetensors.index.json"


def flow_alphas_cumprod(steps: int = FLOW_STEPS) -> torch.Tensor:
    """Return ``(1 - s)^2 / ((1 - s)^2 + s^2)`` at ``s = t / steps``, t = 0..steps-1 (float64)."""
    import torch

    s = torch.arange(steps, dtype=torch.float64) / steps
    return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)


class FlowTarget(LatentTarget):
    """An SD3 pipeline: latents in, text-conditioned ``e_hat`` out (velocity converted at the model's own s)."""

    parametrization = PARAMETRIZATION

    def __init__(self, parts: dict[str, Any], image_size: int, device: torch.device, dtype: torch.dtype, *, t5_tokens: int = T5_TOKENS["sd3"]) -> None:
        """``t5_tokens``: the pipeline's max_sequence_length (model.max_sequence_length); without a T5, that many zero tokens."""
        import torch

        parts = {**parts, "unet": parts["transformer"]}
        super().__init__(parts, flow_alphas_cumprod().float(), "flow", image_size, device, dtype)
        self.transformer = self.unet
        self.sdxl = False
        self.joint_attention_dim = int(self.transformer.config.joint_attention_dim)
        self.t5 = parts["text_encoder_3"].to(device=device, dtype=dtype).eval() if "text_encoder_3" in parts else None
        self.t5_tokenizer = parts.get("tokenizer_3")
        self.t5_tokens = int(t5_tokens)
        self._s = torch.arange(FLOW_STEPS, dtype=torch.float64) / FLOW_STEPS

    def flow_time(self, t: int) -> float:
        """Return s for the attack timestep t (s = t / 1000)."""
        if not 0 <= int(t) < FLOW_STEPS:
            raise TargetError(f"timestep {t} is outside the flow grid 0..{FLOW_STEPS - 1} (s = t / {FLOW_STEPS}).")
        return float(self._s[int(t)])

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return SD3's condition per text: both CLIPs' penultimate states side by side, padded to joint_attention_dim, then T5's (if any); both pooled embeddings."""
        import torch

        count = len(texts)
        batch = texts + [""] * padding_rows(count)
        states, pooled = [], []
        with torch.inference_mode():
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
                tokens = tokenize(tokenizer, batch)
                out = encoder(tokens.input_ids.to(self.device), output_hidden_states=True)
                states.append(out.hidden_states[-2])
                pooled.append(out[0])
            if self.t5 is not None:  # as the pipeline: max_sequence_length tokens, special tokens added, no mask
                tokens = self.t5_tokenizer(batch, padding="max_length", max_length=self.t5_tokens, truncation=True, add_special_tokens=True, return_tensors="pt")
                t5_states = self.t5(tokens.input_ids.to(self.device))[0][:count].float().cpu()
        clip = torch.cat(states, dim=-1)[:count].float().cpu()
        clip = torch.nn.functional.pad(clip, (0, self.joint_attention_dim - clip.shape[-1]))
        if self.t5 is not None:
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
        count = x_s.shape[0]
        padding = padding_rows(count)

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.device, self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        states = cond["encoder_hidden_states"]
        if self.t5 is None:  # no T5: zeros, as diffusers feeds them (stored encodings keep the CLIP part only)
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
