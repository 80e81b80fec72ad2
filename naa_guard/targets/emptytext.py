"""Which texts a model's text encoder receives as the empty caption: conditioning deeper than the string.

A caption can be visible text and still condition the model on nothing: the tokenizer may drop or
fold its characters, or read it as special tokens (a literal ``<|endoftext|>`` is the end token
that pads the empty caption), or truncation may keep only such tokens. The audit then queries with
the empty caption's embedding while its report says "caption" or "prompt".

For a latent pipeline the check is exact and needs no encoder call: a text whose token ids are
the empty caption's, for every tokenizer, and whose attention mask is too where the encoder is
given one, gets the empty caption's embedding bit for bit (the encoder is a function of these
inputs alone). Only the tokenizers are loaded (cheap; the model itself loads when a chunk needs
it). A custom target (``model.loader``) without tokenizers but with ``encode_captions`` is asked
for the embeddings: a text whose embedding is within :func:`tolerance` of the empty caption's
counts as empty. A target with neither cannot be asked (:func:`empty_text_probe` returns None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

__all__ = ["EmptyTextProbe", "empty_text_probe", "tolerance"]

EmptyTextProbe = Callable[[Sequence[str]], list[bool]]  # distinct texts -> whether each reaches the encoder as ""
_BATCH = 64  # texts per encode_captions call of a custom target


def empty_text_probe(target: Any | None, info: Any | None, allow_pickle: bool) -> EmptyTextProbe | None:
    """Return a function telling which texts the model's text encoder receives as the empty caption (None: cannot tell).

    ``target`` is the loaded model, when it is; else ``info`` (a latent pipeline's folders) gives the tokenizers.
    """
    if getattr(info, "family", None) == "flux2" or hasattr(target, "qwen_tokenizer"):  # the chat-templated ids and mask are the Qwen3 encoder's whole input
        return partial(_klein_as_empty, target.qwen_tokenizer if hasattr(target, "qwen_tokenizer") else _klein_tokenizer(info))
    if target is not None:
        tokenizers, encoders = getattr(target, "tokenizers", None), getattr(target, "text_encoders", None)
        if tokenizers and encoders and len(tokenizers) == len(encoders):
            from naa_guard.targets.latent import uses_attention_mask

            tokenize = getattr(target, "tokenize_texts", None)  # a family whose captions reach the encoder otherwise (PixArt: lower-cased, T5 length, masked)
            if tokenize is not None:
                return partial(_tokenized_as_empty, list(tokenizers), [True] * len(tokenizers), tokenize=tokenize)
            return partial(_tokenized_as_empty, list(tokenizers), [uses_attention_mask(encoder.config) for encoder in encoders])
        if callable(getattr(target, "encode_captions", None)):
            return partial(_encoded_as_empty, target)
        return None
    from naa_guard.targets.latent_info import LatentModelInfo

    if getattr(info, "family", None) in ("pixart", "sana"):
        return _own_tokenizer_probe(info, allow_pickle)
    if isinstance(info, LatentModelInfo):
        return partial(_tokenized_as_empty, *_load_tokenizers(info, allow_pickle))
    return None


def _load_tokenizers(info: Any, allow_pickle: bool) -> tuple[list[Any], list[bool]]:
    """Return the pipeline's tokenizers (loaded offline from their folders) and whether each encoder gets the mask."""
    from naa_guard.targets.base import offline_environment, read_json
    from naa_guard.targets.components import load_component
    from naa_guard.targets.latent import _import_sd_libraries, uses_attention_mask

    transformers = _import_sd_libraries()
    names = [name for name in ("tokenizer", "tokenizer_2") if name in info.components]
    if getattr(info, "family", None) == "flux":  # its tokenizer_2 is T5's; as the loaded target's tokenizers: CLIP's only
        names = ["tokenizer"]
    with offline_environment():
        tokenizers = [load_component(name, info.components[name], transformers, allow_pickle) for name in names]
    masks = [uses_attention_mask(read_json(info.components[name.replace("tokenizer", "text_encoder")] / "config.json")) for name in names]
    return tokenizers, masks


def _klein_tokenizer(info: Any) -> Any:
    from naa_guard.targets.base import offline_environment
    from naa_guard.targets.flux2load import load_qwen_tokenizer
    from naa_guard.targets.latent import _import_sd_libraries

    transformers = _import_sd_libraries()
    with offline_environment():
        return load_qwen_tokenizer(info.components["tokenizer"], transformers)


def _klein_as_empty(tokenizer: Any, texts: Sequence[str]) -> list[bool]:
    """Return, per text, whether Flux 2 [klein]'s chat-templated ids and attention mask are the empty caption's."""
    from naa_guard.targets.flux2 import klein_tokens

    ids, mask = klein_tokens(tokenizer, ["", *texts])
    return [bool((ids[row] == ids[0]).all() and (mask[row] == mask[0]).all()) for row in range(1, len(texts) + 1)]


def _own_tokenizer_probe(info: Any, allow_pickle: bool) -> EmptyTextProbe:
    """Return the probe of a PixArt or Sana folder: its tokenizer as the pipeline calls it (lower-cased, stripped, masked; Sana's instruction first)."""
    from naa_guard.targets.base import offline_environment, read_json
    from naa_guard.targets.components import load_component
    from naa_guard.targets.latent import _import_sd_libraries
    from naa_guard.targets.pixart import tokenize_t5
    from naa_guard.targets.sana import tokenize_gemma
    from naa_guard.targets.sana_info import GEMMA_TOKENIZERS

    transformers = _import_sd_libraries()
    folder = info.components["tokenizer"]
    with offline_environment():
        if info.family == "sana":
            name = str(read_json(folder / "tokenizer_config.json").get("tokenizer_class"))
            if name not in GEMMA_TOKENIZERS:
                from naa_guard.errors import TargetError

                raise TargetError(f"{folder}: tokenizer class {name!r}; a SanaPipeline's tokenizer is a {' or '.join(GEMMA_TOKENIZERS)}.")
            tokenizer = getattr(transformers, name).from_pretrained(folder, local_files_only=True)
            return partial(_tokenized_as_empty, [tokenizer], [True], tokenize=tokenize_gemma)
        tokenizer = load_component("tokenizer_3", folder, transformers, allow_pickle)
    return partial(_tokenized_as_empty, [tokenizer], [True], tokenize=partial(tokenize_t5, max_length=info.max_sequence_length))


def _tokenized_as_empty(tokenizers: list[Any], masks: list[bool], texts: Sequence[str], tokenize: Callable[[Any, list[str]], Any] | None = None) -> list[bool]:
    """Return, per text, whether every tokenizer gives it the empty caption's ids (and mask, where the encoder uses it).

    ``tokenize(tokenizer, texts)`` makes the encoder's inputs (default: the CLIP pipelines' padding to model_max_length).
    """
    from naa_guard.targets.latent import tokenize as clip_tokenize

    make = tokenize or clip_tokenize
    texts = list(texts)
    empty = [True] * len(texts)
    for tokenizer, masked in zip(tokenizers, masks, strict=True):
        tokens = make(tokenizer, ["", *texts])
        inputs = [tokens.input_ids] + ([tokens.attention_mask] if masked else [])
        for row in range(len(texts)):
            if empty[row]:
                empty[row] = all(bool((tensor[row + 1] == tensor[0]).all()) for tensor in inputs)
    return empty


def tolerance(dtype: Any) -> float:
    """Return the relative distance below which two embeddings of one encoder call are the same text's.

    Rows of one call that hold the same input differ at most by the rounding of reordered sums:
    a few units of the encoder dtype's epsilon per layer (float32 about 1e-7, bfloat16 8e-3),
    far below 1e-5 / 5e-2 of the embedding's scale. Another text changes the hidden states after
    its first token by a large part of their scale.
    """
    import torch

    return 1e-5 if dtype in (None, torch.float32, torch.float64) else 5e-2


def _encoded_as_empty(target: Any, texts: Sequence[str]) -> list[bool]:
    """Return, per text, whether the target's encode_captions gives it the empty caption's condition."""
    import torch

    tol = tolerance(getattr(target, "dtype", None))
    texts = list(texts)
    flags: list[bool] = []
    for first in range(0, len(texts), _BATCH):
        batch = ["", *texts[first : first + _BATCH]]
        with torch.inference_mode():
            table, rows = target.encode_captions(batch)
        parts = [torch.as_tensor(values, dtype=torch.float64).cpu() for values in table.values()]
        rows = torch.as_tensor(rows)
        for row in rows[1:].tolist():
            flags.append(all(_close(part[row], part[int(rows[0])], tol) for part in parts))
    return flags


def _close(value: Any, empty: Any, tol: float) -> bool:
    scale = float(empty.abs().max()) if empty.numel() else 0.0
    return float((value - empty).abs().max()) <= tol * max(scale, 1e-12) if value.numel() else True
