"""Sana pipelines (SanaPipeline: Gemma2, AutoencoderDC, linear-attention DiT) as the attacks see them.

The flow conversion of :mod:`~naa_guard.targets.flow` applies unchanged (SPEC section 3b:
``e_hat = x_s + (1 - s) v_hat``); what differs is how the model is called, exactly as
``SanaPipeline`` calls it (diffusers 0.42):

- images are encoded by the deterministic DC autoencoder: ``encode(x).latent * scaling_factor``;
- the caption is lower-cased and stripped, prefixed by the pipeline's default complex human
  instruction (``__call__``'s ``complex_human_instruction``, joined by newlines), tokenized by Gemma
  (right padding, BOS) to ``len(instruction tokens) + 300 - 2`` tokens and encoded with its
  attention mask; the BOS position and the last 299 positions are kept (``select_index``), of the
  hidden states and of the mask, which the transformer gets as ``encoder_attention_mask``;
- the time input is the scheduler's timestep ``1000 s`` times ``timestep_scale``; the output is
  the velocity ``v = e - z0`` (``flow_prediction``: ``z0 = x_s - s v``); a learned-sigma output
  keeps its first half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.targets.base import check_component_weights, offline_environment, padding_rows, resolve_device
from naa_guard.targets.flow import FlowTarget, flow_alphas_cumprod
from naa_guard.targets.flow_info import FLOW_STEPS
from naa_guard.targets.latent import LatentTarget, _import_sd_libraries
from naa_guard.targets.sana_info import GEMMA_TOKENIZERS, SANA_TOKENS, SanaModelInfo

if TYPE_CHECKING:
    import torch

# SanaPipeline.__call__'s default complex_human_instruction (diffusers 0.42), joined by newlines before each caption.
COMPLEX_HUMAN_INSTRUCTION = "\n".join(
    [
        "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
        "User Prompt: ",
    ]
)


def tokenize_gemma(tokenizer: Any, texts: list[str]) -> Any:
    """Return Gemma's token ids and attention mask for the captions, as SanaPipeline makes them (before select_index)."""
    tokenizer.padding_side = "right"  # as the pipeline sets it
    prompts = [COMPLEX_HUMAN_INSTRUCTION + text.lower().strip() for text in texts]
    length = len(tokenizer.encode(COMPLEX_HUMAN_INSTRUCTION)) + SANA_TOKENS - 2
    return tokenizer(prompts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True, return_tensors="pt")


def load_gemma(info: SanaModelInfo, transformers: Any, allow_pickle: bool, dtype: Any) -> tuple[Any, Any]:
    """Return the Gemma2 encoder (strictly from its weights, built in the audit's ``dtype``) and its tokenizer, offline."""
    from naa_guard.targets.base import read_json
    from naa_guard.targets.components import TEXT_WEIGHTS, _check_text_weights, _text_weight_files

    tokenizer_folder, folder = info.components["tokenizer"], info.components["text_encoder"]
    class_name = str(read_json(tokenizer_folder / "tokenizer_config.json").get("tokenizer_class"))
    if class_name not in GEMMA_TOKENIZERS:
        raise TargetError(f"{tokenizer_folder}: tokenizer class {class_name!r}; a SanaPipeline's tokenizer is a {' or '.join(GEMMA_TOKENIZERS)}.")
    tokenizer = getattr(transformers, class_name).from_pretrained(tokenizer_folder, local_files_only=True)
    use_safetensors, variant = check_component_weights(folder, allow_pickle, TEXT_WEIGHTS)
    encoder = transformers.Gemma2Model.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, dtype=dtype)  # the audit's dtype, not config.json's
    _check_text_weights(encoder, _text_weight_files(folder, variant), folder)
    return encoder, tokenizer


class SanaTarget(FlowTarget):
    """A Sana pipeline: DC-AE latents in, ``e_hat`` out; the transformer sees Gemma2 states and mask at time input 1000 s x timestep_scale."""

    def __init__(self, parts: dict[str, Any], info: SanaModelInfo, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        # LatentTarget's set-up, not FlowTarget's: that one reads SD3's joint_attention_dim and T5
        LatentTarget.__init__(self, {**parts, "unet": parts["transformer"]}, flow_alphas_cumprod().float(), "flow", info.sample_size, device, dtype)
        self.transformer = self.unet
        self.t5, self.t5_tokenizer = None, None
        self._s = torch.arange(FLOW_STEPS, dtype=torch.float64) / FLOW_STEPS
        self.timestep_scale = info.timestep_scale
        self.learned_sigma = int(self.transformer.config.out_channels) == 2 * int(self.transformer.config.in_channels)

    def tokenize_texts(self, tokenizer: Any, texts: list[str]) -> Any:
        """Return what the Gemma encoder gets for the texts (the empty-caption check asks for it)."""
        return tokenize_gemma(tokenizer, texts)

    def _vae_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return the DC autoencoder's latent (deterministic: there is no posterior to take the mean of)."""
        return self.vae.encode(pixels).latent

    def _encode_texts(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Return Gemma2's hidden states and attention mask per caption, at the pipeline's selected positions (encode_prompt's outputs)."""
        import torch

        count = len(texts)
        batch = texts + [""] * padding_rows(count)
        tokens = self.tokenize_texts(self.tokenizers[0], batch)
        mask = tokens.attention_mask.to(self.device)
        select = [0, *range(-SANA_TOKENS + 1, 0)]
        with torch.inference_mode():
            states = self.text_encoders[0](tokens.input_ids.to(self.device), attention_mask=mask)[0]
        parts = {"encoder_hidden_states": states[:count, select].float().cpu(), "encoder_attention_mask": mask[:count, select].float().cpu()}
        if not bool(torch.isfinite(parts["encoder_hidden_states"]).all()):
            raise NonFiniteScoreError(f"the Gemma2 text encoder gave NaN or infinite embeddings in {self.dtype} (expected finite). Check its weights, or use runtime.dtype: float32.")
        self.encoded_texts += count
        return [{name: tensor[i] for name, tensor in parts.items()} for i in range(count)]

    def predict_velocity(self, x_s: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the transformer's velocity (float32) at ``x_s``, time input ``1000 s x timestep_scale``, as SanaPipeline calls it."""
        import torch

        if not isinstance(cond, dict) or "encoder_attention_mask" not in cond:
            raise TargetError("a Sana pipeline needs the Gemma2 condition and attention mask its encode() returned; got another condition.")
        count = x_s.shape[0]
        padding = padding_rows(count)

        def pad(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(self.device, self.dtype)
            return torch.cat([tensor, tensor.new_zeros((padding, *tensor.shape[1:]))]) if padding else tensor

        timestep = torch.full((count + padding,), FLOW_STEPS * self.flow_time(t) * self.timestep_scale, device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            out = self.transformer(
                pad(x_s), encoder_hidden_states=pad(cond["encoder_hidden_states"]), encoder_attention_mask=pad(cond["encoder_attention_mask"]),
                timestep=timestep, return_dict=False,
            )[0][:count].float()  # fmt: skip
        self.forward_calls += 1
        self.sample_queries += count
        return out.chunk(2, dim=1)[0] if self.learned_sigma else out


def load_sana_target(info: SanaModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> SanaTarget:
    """Return the loaded Sana target, offline and strictly (every weight from its files), on the device and dtype."""
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    from naa_guard.targets.modelcheck import check_weights_match
    from naa_guard.targets.variants import weight_files_for

    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    verbosity = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        with offline_environment():
            encoder, tokenizer = load_gemma(info, transformers, allow_pickle, torch_dtype)
            modules = {}
            for name, cls in (("vae", diffusers.AutoencoderDC), ("transformer", diffusers.SanaTransformer2DModel)):
                folder = info.components[name]
                use_safetensors, variant = check_component_weights(folder, allow_pickle)
                modules[name] = cls.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False)
                check_weights_match(modules[name], weight_files_for(folder, use_safetensors, variant), folder)
        return SanaTarget({**modules, "text_encoder": encoder, "tokenizer": tokenizer}, info, torch_device, torch_dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        if "weights_only" in str(exc):  # torch's advice to unpickle with weights_only=False: never passed on
            from naa_guard.targets.modelcheck import pickle_load_error

            raise pickle_load_error(info.root, exc) from None
        from naa_guard.targets.loaderror import load_error_detail

        raise TargetError(f"{info.root}: loading the SanaPipeline failed: {load_error_detail(exc)} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
