"""A transformer pipeline folder's component subfolders, checked to be there before any config is read."""

from __future__ import annotations

from pathlib import Path

from naa_guard.errors import TargetError


def pipeline_folders(root: Path, names: list[str], kind: str) -> dict[str, Path]:
    """Return ``{name: root / name}``; raise TargetError naming the missing subfolders, or a model component without its config.json.

    ``kind`` names the pipeline in messages ("SD3 pipeline", "PixArtSigmaPipeline", ...). Tokenizers
    and the scheduler carry other files; every other component is a model with a config.json.
    """
    folders = {name: root / name for name in names}
    missing = [f"{name}/" for name, folder in folders.items() if not folder.is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise TargetError(
            f"{root}: this {kind} is missing {', '.join(missing)} (found: {', '.join(present) or 'no subfolders'}). "
            f"It needs {', '.join(f'{n}/' for n in names)}; save the whole pipeline with save_pretrained."
        )
    for name in names:
        if not name.startswith("tokenizer") and name != "scheduler" and not (folders[name] / "config.json").is_file():
            raise TargetError(f"{folders[name]}: no config.json. Save this component with save_pretrained.")
    return folders
