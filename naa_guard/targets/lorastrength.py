"""The strength a LoRA file declares, and the check that the loaded adapter applies exactly that.

A LoRA layer adds ``scaling * up @ down`` to its base weight, where ``scaling = alpha / rank``
(``alpha / sqrt(rank)`` for rank-stabilised LoRA) times the adapter scale (``model.lora_scale``).
The file declares alpha in one of three ways: a kohya-style ``<module>.alpha`` tensor beside the
module's ``lora_down`` / ``lora_up`` pair (one per module), the ``lora_adapter_metadata`` JSON that
diffusers' ``save_lora_weights`` stores in the safetensors header (``unet.lora_alpha``,
``unet.alpha_pattern``, ...), or peft's ``adapter_config.json`` beside the file; a file that
declares none means alpha = rank (scaling 1), the diffusers and peft convention.

diffusers and peft versions differ in which of these they honour (diffusers 0.42 with peft 0.21
drops kohya per-module alphas with only a RuntimeWarning), and a LoRA applied at another strength
is another model: a weaker one can pass a gate the real one fails. So after loading, every layer's
effective ``scaling`` is compared with the declared one, and a difference is an error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError

METADATA_KEY = "lora_adapter_metadata"  # diffusers' safetensors header entry (loaders.lora_base)
COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "transformer")
_DOWN = re.compile(r"^(?P<module>.+?)(?:\.lora_down|\.lora\.down|\.lora_A|_lora\.down)\.weight$")
# Two products of the same three floats in another order differ by a few ulps; 1e-9 is far above
# that and far below any alpha anyone sets on purpose.
REL_TOL = 1e-9


@dataclass(frozen=True)
class DeclaredScaling:
    """One LoRA module of the file: its down-projection tensor, rank, alpha and where alpha came from."""

    module: str  # the module prefix as the file names it
    down: Any  # the down (lora_A) tensor: identifies the loaded layer by value
    rank: int
    alpha: float
    source: str  # ".alpha tensor", "lora_adapter_metadata", "adapter_config.json" or "none (alpha = rank)"
    rslora: bool = False

    def scaling(self, scale: float) -> float:
        """Return the effective scaling the file declares at adapter scale ``scale``."""
        return scale * self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def describe(self, scale: float) -> str:
        """Return 'alpha A / rank R x lora_scale S = X (from SOURCE)'."""
        rank = f"sqrt(rank {self.rank})" if self.rslora else f"rank {self.rank}"
        return f"alpha {self.alpha:g} / {rank} x lora_scale {scale:g} = {self.scaling(scale):.6g} (alpha from {self.source})"


def _pattern_value(patterns: dict[str, Any], module: str) -> Any:
    """Return the value of the first peft-style pattern (a key matching the module name's end) that fits ``module``."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?(?:{key})", module):
            return value
    return None


def _config_for(component: str, metadata: dict[str, Any], adapter_config: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Return the peft config that declares a component's alphas, and its name; None when nothing does."""
    packed = {key.removeprefix(f"{component}."): value for key, value in metadata.items() if key.startswith(f"{component}.")}
    if "lora_alpha" in packed:
        return packed, METADATA_KEY
    if "lora_alpha" in adapter_config:
        return adapter_config, "adapter_config.json"
    return None


def _number(value: Any, where: str, file: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TargetError(f"model.lora {file}: {where} is {value!r}; expected a positive number. Re-save the LoRA with save_lora_weights.")
    return float(value)


def declared_scalings(tensors: dict[str, Any], file: Path, metadata: dict[str, str] | None) -> list[DeclaredScaling]:
    """Return the strength every LoRA module of the file declares; TargetError when it cannot be told."""
    try:
        packed = json.loads((metadata or {}).get(METADATA_KEY) or "{}")
        config_file = file.parent / "adapter_config.json"
        adapter_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (ValueError, OSError) as exc:
        raise TargetError(f"model.lora {file}: cannot read the LoRA's declared alpha ({exc}). Re-save the LoRA with save_lora_weights.") from None
    if not isinstance(packed, dict) or not isinstance(adapter_config, dict):
        raise TargetError(f"model.lora {file}: the LoRA's {METADATA_KEY} / adapter_config.json is not a JSON object. Re-save the LoRA with save_lora_weights.")
    dora = sorted(name for name in tensors if "dora_scale" in name)
    if dora:
        raise TargetError(
            f"model.lora {file}: a DoRA file ({dora[0]}, ...); diffusers drops DoRA magnitudes for these pipelines, so the "
            f"audit would score another model. Merge the DoRA into the base weights and audit that pipeline instead."
        )
    declared, used_alphas = [], set()
    for name, down in sorted(tensors.items()):
        match = _DOWN.match(name)
        if match is None:
            continue
        module = match["module"]
        rank = int(down.shape[0])
        component = next((c for c in COMPONENTS if module.startswith(f"{c}.")), "unet")
        found = _config_for(component, packed, adapter_config)
        rslora = bool(found[0].get("use_rslora", False)) if found else False
        if f"{module}.alpha" in tensors:
            used_alphas.add(f"{module}.alpha")
            alpha, source = _number(float(tensors[f"{module}.alpha"].float().item()), f"{module}.alpha", file), ".alpha tensor"
        elif found is not None:
            config, source = found
            local = module.removeprefix(f"{component}.")
            pattern = _pattern_value(config.get("alpha_pattern") or {}, local)
            alpha = _number(pattern if pattern is not None else config["lora_alpha"], f"{source} lora_alpha of {module}", file)
        else:
            alpha, source = float(rank), "none (alpha = rank)"
        declared.append(DeclaredScaling(module, down, rank, alpha, source, rslora))
    stray = sorted(name for name in tensors if name.endswith("alpha") and name not in used_alphas)
    if stray:
        raise TargetError(
            f"model.lora {file}: alpha tensor(s) {', '.join(stray[:3])} belong to no lora_down / lora_A tensor of the file, so the "
            f"strength they declare cannot be checked. Re-save the LoRA with save_lora_weights (alpha beside each module's down weight)."
        )
    return declared


def loaded_scalings(parts: dict[str, Any], adapter: str, fingerprint: Any) -> dict[Any, list[tuple[str, float]]]:
    """Return, per down-weight fingerprint, the (layer name, effective scaling) of every loaded adapter layer."""
    found: dict[Any, list[tuple[str, float]]] = {}
    for component in COMPONENTS:
        if component not in parts:
            continue
        for name, layer in parts[component].named_modules():
            downs, scaling = getattr(layer, "lora_A", None), getattr(layer, "scaling", None)
            if downs is None or not isinstance(scaling, dict) or adapter not in downs or adapter not in scaling:
                continue
            found.setdefault(fingerprint(downs[adapter].weight), []).append((f"{component}.{name}", float(scaling[adapter])))
    return found


def check_scalings(declared: list[DeclaredScaling], loaded: dict[Any, list[tuple[str, float]]], scale: float, file: Path, fingerprint: Any) -> None:
    """Return None; raise TargetError unless each module's loaded scaling equals the declared one.

    Modules are matched by their down weight's value (the loaded names differ from the file's);
    where several modules share one down weight, their declared and loaded scalings must agree as
    multisets.
    """
    groups: dict[Any, list[DeclaredScaling]] = {}
    for module in declared:
        groups.setdefault(fingerprint(module.down), []).append(module)
    wrong: list[str] = []
    for key, modules in groups.items():
        want = sorted(module.scaling(scale) for module in modules)
        got = sorted(value for _, value in loaded.get(key, []))
        if len(want) != len(got) or not all(math.isclose(w, g, rel_tol=REL_TOL, abs_tol=1e-12) for w, g in zip(want, got)):
            shown = ", ".join(f"{value:.6g}" for value in got) or "no layer"
            wrong.append(f"{modules[0].module}: the file declares {modules[0].describe(scale)}, the loaded layer applies {shown}")
    if wrong:
        import diffusers
        import peft

        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise TargetError(
            f"model.lora {file}: the LoRA as loaded does not have the strength the file declares, in {len(wrong)} of "
            f"{len(declared)} modules: {'; '.join(wrong[:3])}{more}. diffusers {diffusers.__version__} / peft "
            f"{peft.__version__} did not apply the file's alpha, and a LoRA at another strength is another model (a weaker "
            f"one can pass a gate the real one fails). Fix: fold each module's alpha / rank into its up weight and save the "
            f"LoRA without alphas (save_lora_weights), or use a diffusers / peft version that applies these alphas."
        )
