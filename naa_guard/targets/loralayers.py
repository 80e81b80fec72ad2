"""A LoRA checked layer by layer: each layer's loaded update must be the one the file declares for that layer.

A LoRA module adds ``delta W = alpha / rank * up @ down`` (``alpha / sqrt(rank)`` for rank-stabilised
LoRA) to one linear layer, at ``model.lora_scale``. The file is read here on its own terms (every key
must name a layer of the pipeline through a known layout: :mod:`~naa_guard.targets.fluxlora`), and
after diffusers' ``load_lora_weights`` (which converts other layouts: fused projections split, alphas
folded into the weights) every layer the file names must carry the adapter with exactly the file's
``delta W``, and no other layer may carry it. The products, not the tensors, are compared: they are
what the model computes, the same for every layout and conversion. So a key diffusers silently
dropped, a tensor renamed to another layer of the same shape, an alpha not applied or applied twice,
and a layer diffusers widened or filled on its own are each an error, never a weaker model. Then
``set_adapters`` applies ``model.lora_scale`` and every layer's scaling must move by exactly that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from naa_guard.errors import TargetError
from naa_guard.targets.lorastrength import DeclaredScaling

_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"), (".lora.down.weight", ".lora.up.weight"), ("_lora.down.weight", "_lora.up.weight"))
# The loaded update may differ from the file's by the rounding of the file's dtype (diffusers folds
# alpha into the weights in that dtype): at most eps per element of up and down, so the difference
# of the products is at most about eps x |up| |down| (Frobenius norms). 1e-6 is the floor for
# float32 files (float64 products of float32 factors), far below any change of strength.
FLOOR_TOL = 1e-6
SCALE_REL_TOL = 1e-9


# old diffusers text-encoder LoRA names (``to_q_lora``) for the CLIP attention projections
_OLD_CLIP = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


@dataclass(frozen=True)
class LayerTarget:
    """One layer a module of a LoRA file updates: its component, its module path, and how the up rows map."""

    component: str  # "transformer", "text_encoder", ...
    layer: str  # the module path inside the component ("flat:" + its dots-as-underscores spelling for kohya names)
    swap_halves: bool = False  # the up weight's two row halves swapped (BFL's final modulation)


def diffusers_targets(module: str, components: tuple[str, ...]) -> list[LayerTarget] | None:
    """Return the layer a diffusers / peft module name (``<component>.<module path>``) updates; None for another component."""
    component, _, layer = module.partition(".")
    if component not in components or not layer:
        return None
    if component.startswith("text_encoder"):
        head, _, last = layer.rpartition(".")
        layer = f"{head}.{_OLD_CLIP.get(last, last)}" if head else layer
    return [LayerTarget(component, layer)]


def sd_targets(module: str) -> list[LayerTarget] | None:
    """Return the layer an SD / SDXL LoRA module names: diffusers / peft names, or kohya names spelling the diffusers path with underscores."""
    if module.startswith(("unet.", "text_encoder.", "text_encoder_2.")):
        return diffusers_targets(module, ("unet", "text_encoder", "text_encoder_2"))
    for prefix, component in (("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder")):
        if module.startswith(prefix):
            return [LayerTarget(component, "flat:" + module.removeprefix(prefix))]
    return None


def resolve_flat(layer: str, names: list[str]) -> str | None:
    """Return the module path among ``names`` whose dots-as-underscores spelling is ``layer`` (kohya's text-encoder names)."""
    found = [name for name in names if name.replace(".", "_") in (layer, layer.removeprefix("text_model_"))]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Term:
    """One module of the file as it reaches one layer: its rows of up, its down, and the declared factor."""

    key: str  # the file's down-weight key
    up: Any
    down: Any
    factor: float  # alpha / rank (or alpha / sqrt(rank)) as the file declares it
    declared: str  # how the factor was declared, for messages


Expected = dict[tuple[str, str], list[Term]]


def _pair(module: str, tensors: dict[str, Any]) -> tuple[str, str]:
    for down, up in _PAIRS:
        if module + down in tensors:
            return module + down, module + up
    raise AssertionError(module)  # declared_scalings found a down key of one of these forms


def _layer(parts: dict[str, Any], target: LayerTarget, key: str, file: Path, cache: dict[str, dict[str, Any]]) -> tuple[str, Any]:
    import torch

    component = parts.get(target.component)
    if component is None:
        raise TargetError(f"model.lora {file}: {key} is for the {target.component}, which this pipeline does not have. Use the LoRA trained for this base pipeline.")
    modules = cache.setdefault(target.component, dict(component.named_modules()))
    name = resolve_flat(target.layer.removeprefix("flat:"), list(modules)) if target.layer.startswith("flat:") else target.layer
    if name is not None and name not in modules and name.startswith("text_model."):  # CLIPTextModel is flat in recent transformers
        name = name.removeprefix("text_model.")
    layer = modules.get(name) if name is not None else None
    if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) or getattr(layer, "groups", 1) != 1:
        raise TargetError(
            f"model.lora {file}: {key} names the layer {target.component}.{target.layer.removeprefix('flat:')}, which the pipeline's "
            f"{target.component} does not have as a linear (or convolution) layer. The LoRA was trained for another architecture or size (other block "
            f"counts or layer names); use the LoRA trained for this base pipeline."
        )
    return str(name), layer


def _width(layer: Any) -> tuple[int, int]:
    """Return (out, in) of the layer's weight as a matrix: a k x k convolution's input counts in x k x k."""
    if hasattr(layer, "out_features"):
        return int(layer.out_features), int(layer.in_features)
    return int(layer.out_channels), int(layer.in_channels) * math.prod(layer.kernel_size)


DIFFUSERS_LAYOUT = "diffusers / peft keys (<component>.<layer>.lora_A.weight / lora_B.weight, as the pipeline's save_lora_weights writes them)"


def expected_layers(
    tensors: dict[str, Any], declared: list[DeclaredScaling], parts: dict[str, Any], file: Path, resolve: Callable[[str], list[LayerTarget] | None], layouts: str = DIFFUSERS_LAYOUT,
) -> Expected:  # fmt: skip
    """Return, per (component, layer), the file's terms for that layer; TargetError for any key no layer takes (``layouts`` names the readable ones), or a shape that does not fit."""
    import torch

    expected: Expected = {}
    consumed: set[str] = set()
    modules: dict[str, dict[str, Any]] = {}  # per component: its modules by name, read once
    for module in declared:
        down_key, up_key = _pair(module.module, tensors)
        if up_key not in tensors:
            raise TargetError(f"model.lora {file}: {down_key} has no up weight {up_key} beside it, so its update cannot be formed. Re-save the LoRA (save_lora_weights).")
        targets = resolve(module.module)
        if targets is None:
            continue  # left unconsumed: reported below with every other unknown key
        consumed.update((down_key, up_key, f"{module.module}.alpha"))
        up, down = tensors[up_key], tensors[down_key]
        layers = [(target, *_layer(parts, target, down_key, file, modules)) for target in targets]
        kernels = {tuple(getattr(layer, "kernel_size", ())) for _, _, layer in layers}
        if up.ndim != down.ndim or up.ndim not in (2, 4) or up.shape[1] != down.shape[0] or up.shape[2:] not in ((), (1, 1)) or kernels != {tuple(down.shape[2:])}:
            raise TargetError(
                f"model.lora {file}: {up_key} is {tuple(up.shape)} and {down_key} {tuple(down.shape)}; a LoRA pair is (out, rank) and (rank, in) for a "
                f"linear layer, (out, rank, 1, 1) and (rank, in, k, k) for a k x k convolution, and its layer is {'/'.join(str(k) or 'linear' for k in kernels)}. Re-save the LoRA."
            )
        up, down = up.reshape(up.shape[0], up.shape[1]), down.reshape(down.shape[0], -1)
        widths = [_width(layer)[0] for _, _, layer in layers]
        if sum(widths) != up.shape[0] or any(_width(layer)[1] != down.shape[1] for _, _, layer in layers):
            shown = " + ".join(f"{name} {_width(layer)[0]}x{_width(layer)[1]}" for _, name, layer in layers)
            raise TargetError(
                f"model.lora {file}: {up_key} / {down_key} update a {up.shape[0]}x{down.shape[1]} weight, but the layer(s) they belong "
                f"to take {shown}. The LoRA was trained for another base (another width); use the LoRA trained for this base pipeline."
            )
        start = 0
        for (target, name, _), width in zip(layers, widths):
            rows = up[start : start + width]
            start += width
            if target.swap_halves:
                rows = torch.cat(rows.chunk(2, dim=0)[::-1])
            term = Term(down_key, rows, down, module.scaling(1.0), module.describe(1.0).replace(" x lora_scale 1 ", " "))
            expected.setdefault((target.component, name), []).append(term)
    unknown = sorted(set(tensors) - consumed)
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise TargetError(
            f"model.lora {file}: {len(unknown)} of the file's {len(tensors)} tensors name no layer of this pipeline in a layout "
            f"naa-guard reads ({shown}); diffusers would drop or misplace them and the audit would score another model. Expected "
            f"{layouts}. Re-save the LoRA with save_lora_weights, or remove the tensors that belong to no layer."
        )
    return expected


def _adapter_layers(parts: dict[str, Any], adapter: str, file: Path) -> dict[tuple[str, str], Any]:
    """Return every layer carrying ``adapter``, as (component, name); TargetError for an adapter of a kind not checked here."""
    found = {}
    for component in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "unet"):
        if component not in parts:
            continue
        for name, layer in parts[component].named_modules():
            names = getattr(layer, "adapter_layer_names", ())
            if not any(adapter in getattr(layer, attr, {}) for attr in names):
                continue
            plain = adapter in getattr(layer, "lora_A", {}) and adapter in getattr(layer, "lora_B", {})
            odd = [attr for attr in names if attr not in ("lora_A", "lora_B") and adapter in getattr(layer, attr, {})]
            dora = bool(getattr(layer, "use_dora", {}).get(adapter, False))
            if not plain or odd or dora or getattr(layer, "fan_in_fan_out", False) or getattr(layer.lora_B[adapter], "bias", None) is not None:
                raise TargetError(
                    f"model.lora {file}: the loaded adapter on {component}.{name} is not a plain linear LoRA ({', '.join(odd) or 'DoRA, bias or transposed weights'}), "
                    f"whose strength naa-guard cannot check. Merge the adapter into the base weights and audit that pipeline instead."
                )
            found[(component, name)] = layer
    return found


def _product_norm(up: Any, down: Any) -> float:
    """Return the Frobenius norm of ``up @ down`` without forming it (through the rank x rank Gram matrices)."""
    import torch

    up, down = up.double(), down.double()
    return float(torch.trace((up.T @ up) @ (down @ down.T)).clamp(min=0).sqrt())


def _gap(terms: list[Term], up: Any, down: Any, scaling: float) -> tuple[float, float, float]:
    """Return (|file delta - loaded delta|, |file delta|, the rounding scale sum |f| |up| |down|), Frobenius norms, float64."""
    import torch

    ups = [term.up.double() * term.factor for term in terms]
    downs = [term.down.double() for term in terms]
    big_up, big_down = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
    wanted = _product_norm(big_up, big_down)
    gap = _product_norm(torch.cat([big_up, -scaling * up.double()], dim=1), torch.cat([big_down, down.double()], dim=0))
    size = sum(abs(term.factor) * float(term.up.double().norm() * term.down.double().norm()) for term in terms) + abs(scaling) * float(up.double().norm() * down.double().norm())
    return gap, wanted, size


def _tolerance(terms: list[Term], up: Any) -> float:
    import torch

    dtypes = {tensor.dtype for term in terms for tensor in (term.up, term.down)} | {up.dtype}
    return max(FLOOR_TOL, 2 * max(float(torch.finfo(dtype).eps) for dtype in dtypes))


def check_loaded_layers(parts: dict[str, Any], adapter: str, expected: Expected, file: Path, *, scale: float = 1.0) -> dict[tuple[str, str], float]:
    """Return each adapter layer's scaling after checking the loaded update equals the file's times ``scale`` (the adapter weight set), layer by layer."""
    loaded = _adapter_layers(parts, adapter, file)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        shown = ", ".join(f"{c}.{n} ({expected[(c, n)][0].key})" for c, n in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise TargetError(
            f"model.lora {file}: after loading, {len(missing)} of the {len(expected)} layers the file updates carry no adapter: {shown}. "
            f"diffusers dropped these tensors (it only warns), and auditing without them would audit another model. Re-save the LoRA "
            f"with save_lora_weights in the diffusers layout (transformer.<layer>.lora_A / lora_B), or use a diffusers version that loads this layout."
        )
    extra = sorted(set(loaded) - set(expected))
    if extra:
        shown = ", ".join(f"{c}.{n}" for c, n in extra[:4])
        raise TargetError(f"model.lora {file}: after loading, {len(extra)} layer(s) carry an adapter the file does not declare ({shown}). diffusers changed the LoRA on loading; re-save it with save_lora_weights.")
    wrong = []
    for key in sorted(expected):
        layer, terms = loaded[key], expected[key]
        up, down, scaling = layer.lora_B[adapter].weight.detach(), layer.lora_A[adapter].weight.detach(), float(layer.scaling[adapter])
        up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
        terms = [Term(term.key, term.up, term.down, term.factor * scale, term.declared) for term in terms] if scale != 1.0 else terms
        gap, wanted, size = _gap(terms, up.cpu(), down.cpu(), scaling)
        if not gap <= _tolerance(terms, up) * size:
            loaded_norm = abs(scaling) * _product_norm(up.cpu(), down.cpu())
            wrong.append(f"{key[0]}.{key[1]} ({terms[0].key}: the file declares {terms[0].declared}, an update of norm {wanted:.6g}; the loaded one has norm {loaded_norm:.6g}, {gap:.3g} apart)")
    if wrong:
        import diffusers
        import peft

        shown = "; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else "")
        raise TargetError(
            f"model.lora {file}: in {len(wrong)} of {len(expected)} layers the loaded LoRA is not the update the file declares for that "
            f"layer: {shown}. diffusers {diffusers.__version__} / peft {peft.__version__} applied another strength (an alpha dropped or "
            f"folded twice) or put tensors into other layers, and a LoRA at another strength is another model (a weaker one can pass a "
            f"gate the real one fails). Fix: re-save the LoRA with save_lora_weights (alpha / rank folded into lora_B, no alphas), then audit it."
        )
    return {key: float(layer.scaling[adapter]) for key, layer in loaded.items()}


def check_scale(parts: dict[str, Any], adapter: str, before: dict[tuple[str, str], float], scale: float, file: Path) -> None:
    """Return None; raise TargetError unless set_adapters moved every layer's scaling by exactly ``scale`` (model.lora_scale)."""
    after = {key: float(layer.scaling[adapter]) for key, layer in _adapter_layers(parts, adapter, file).items()}
    wrong = [f"{c}.{n}: {before[(c, n)]:.6g} -> {after.get((c, n), float('nan')):.6g}" for c, n in sorted(before) if not math.isclose(after.get((c, n), math.nan), scale * before[(c, n)], rel_tol=SCALE_REL_TOL, abs_tol=1e-12)]
    if wrong or set(after) != set(before):
        raise TargetError(
            f"model.lora {file}: model.lora_scale {scale:g} did not scale the adapter as set: {'; '.join(wrong[:3]) or 'other layers'}. "
            f"Check the diffusers / peft versions, or audit the LoRA at lora_scale 1."
        )
