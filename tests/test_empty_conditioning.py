"""Conditioning carries information, or is declared empty (issue 24 item 4).

Blank texts (whitespace, format characters such as U+200B) are missing captions in every source,
a blank data.prompt or ${ENV} value is refused, and a caption or prompt that the text encoder
receives as the empty caption (a literal <|endoftext|>: the end token that pads the empty caption)
is refused under conditioning: caption / prompt, and reported as the weak audit under auto.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, write_policy

from naa_guard.audit import audit, prepare_audit
from naa_guard.blanktext import is_blank
from naa_guard.errors import DataError, PolicyError
from naa_guard.policy import load_policy
from naa_guard.samples import list_samples
from naa_guard.samples.conditioning import check_encoder_conditioning
from naa_guard.targets.emptytext import empty_text_probe

SD = FIXTURES / "tiny_sd"
BLANKS = ["", "   ", "\u200b", "\u200b\u200b", "\ufeff", "\u2060\u00ad", "\t\u3000\u200d", "\x00\x07"]
END = "<|endoftext|>"  # CLIP's end token: the empty caption is [start, end, pad=end, ...]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text", BLANKS)
def test_blank_texts(text: str) -> None:
    assert is_blank(text)


@pytest.mark.parametrize("text", ["a", "a\u200b", "\u200bcat", "ー", "\u3164", "0"])
def test_texts_that_are_not_blank(text: str) -> None:
    assert not is_blank(text)


def copy_set(tmp_path: Path, side: str, captions: list[str] | None = None, count: int = 10) -> Path:
    """Copy ``count`` fixture images of a side into tmp_path with a manifest of the given captions (default: theirs)."""
    with (SD / f"{side}.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:count]
    (tmp_path / side).mkdir(exist_ok=True)
    manifest = tmp_path / f"{side}.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for i, row in enumerate(rows):
            shutil.copy(SD / row["path"], tmp_path / row["path"])
            writer.writerow([row["path"], row["caption"] if captions is None else captions[i % len(captions)]])
    return manifest


def sd_policy(tmp_path: Path, data: str = "", name: str = "sd") -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"version: 1\nname: {name}\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {tmp_path / 'members.csv'}, nonmembers: {tmp_path / 'nonmembers.csv'}{data}}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nruntime: {device: cpu, batch_size: 16, seed: 0}\n",
    )


# ----------------------------------------------------------------------------- blank captions, every source


def test_blank_captions_of_a_manifest_are_missing(tmp_path: Path) -> None:
    manifest = copy_set(tmp_path, "members", captions=["\u200b", " \ufeff ", "\u2060"], count=3)
    assert list_samples(manifest, size=32, channels=3).captions == (None, None, None)
    jsonl = tmp_path / "members.jsonl"
    jsonl.write_text("".join(json.dumps({"path": f"members/00{i}.png", "caption": text}) + "\n" for i, text in enumerate(["\u200b", "a cat", "\u00ad"])), encoding="utf-8")
    assert list_samples(jsonl, size=32, channels=3).captions == (None, "a cat", None)


def test_blank_captions_of_metadata_files_and_sidecars_are_missing(tmp_path: Path) -> None:
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for i in range(2):
        shutil.copy(SD / "members" / f"00{i}.png", folder / f"00{i}.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "000.png", "text": "\u200b"}) + "\n" + json.dumps({"file_name": "001.png", "text": "a cat"}) + "\n", encoding="utf-8")
    assert list_samples(folder, size=32, channels=3).captions == (None, "a cat")
    sidecars = tmp_path / "sidecars"
    shutil.copytree(folder, sidecars)
    (sidecars / "metadata.jsonl").unlink()
    (sidecars / "000.txt").write_text("\u200b\u200b\n", encoding="utf-8")
    (sidecars / "001.caption").write_text("\ufeff\u2060", encoding="utf-8")
    assert list_samples(sidecars, size=32, channels=3).captions == (None, None)


def test_blank_captions_of_a_dataset_are_missing(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    images = [{"bytes": (SD / "members" / f"00{i}.png").read_bytes(), "path": None} for i in range(2)]
    datasets.Dataset.from_dict({"image": images, "text": ["\u200b", "a cat"]}, features=features).to_parquet(str(tmp_path / "train.parquet"))
    assert list_samples(tmp_path / "train.parquet", size=32, channels=3).captions == (None, "a cat")


def test_invisible_captions_on_every_image_refuse_caption_conditioning(tmp_path: Path) -> None:
    copy_set(tmp_path, "members", captions=["\u200b"])
    copy_set(tmp_path, "nonmembers", captions=["\u200b\u200b"])
    with pytest.raises(DataError, match="have no caption"):
        prepare_audit(load_policy(sd_policy(tmp_path, ", conditioning: caption")), progress=False)
    with pytest.raises(PolicyError, match="no member or non-member has a caption"):
        prepare_audit(load_policy(sd_policy(tmp_path)), progress=False)


# ----------------------------------------------------------------------------- prompt and ${ENV}


@pytest.mark.parametrize("prompt", ['""', '"  "', '"\\u200b"', '"\\t\\u2060"'])
def test_a_blank_prompt_is_refused(tmp_path: Path, prompt: str) -> None:
    copy_set(tmp_path, "members")
    copy_set(tmp_path, "nonmembers")
    with pytest.raises(PolicyError, match=r"data\.prompt: .*blank prompt is a missing one"):
        load_policy(sd_policy(tmp_path, f", prompt: {prompt}"))


@pytest.mark.parametrize("value", ["  ", "\u200b", "\t\ufeff"])
def test_a_blank_environment_value_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NAA_GUARD_TEST_PROMPT", value)
    with pytest.raises(PolicyError, match=r"data\.prompt: environment variable \$\{NAA_GUARD_TEST_PROMPT\} is set to a blank"):
        load_policy(sd_policy(tmp_path, ', prompt: "${NAA_GUARD_TEST_PROMPT}"'))
    monkeypatch.delenv("NAA_GUARD_TEST_PROMPT")
    with pytest.raises(PolicyError, match="is not set"):
        load_policy(sd_policy(tmp_path, ', prompt: "${NAA_GUARD_TEST_PROMPT}"'))


# ----------------------------------------------------------------------------- what the text encoder receives


def test_the_end_token_reaches_the_encoder_as_the_empty_caption(sd_target) -> None:  # type: ignore[no-untyped-def]
    table, rows = sd_target.encode_captions(["", END, f"{END} {END}", "a cat"])
    hidden = table["encoder_hidden_states"][rows]
    assert np.array_equal(hidden[0].numpy(), hidden[1].numpy()) and np.array_equal(hidden[0].numpy(), hidden[2].numpy())
    assert not np.allclose(hidden[0].numpy(), hidden[3].numpy())
    assert empty_text_probe(sd_target, None, False)([END, f"{END} {END}", "a cat", "\u200b"]) == [True, True, False, False]


@pytest.mark.parametrize("loaded", [True, False])
def test_captions_the_encoder_receives_as_empty_refuse_caption_conditioning(tmp_path: Path, sd_target, loaded: bool) -> None:  # type: ignore[no-untyped-def]
    copy_set(tmp_path, "members", captions=[END, f"{END} {END}"])
    copy_set(tmp_path, "nonmembers", captions=[END])
    target = sd_target if loaded else None  # not loaded: the tokenizers are read from the pipeline folder
    with pytest.raises(DataError, match="receives the captions of 10 members row.* as the empty caption"):
        prepare_audit(load_policy(sd_policy(tmp_path, ", conditioning: caption")), progress=False, target=target)


def test_captions_the_encoder_receives_as_empty_on_some_images_are_refused_under_auto(tmp_path: Path) -> None:
    copy_set(tmp_path, "members", captions=[END, "a red disc at the left on grey"])
    copy_set(tmp_path, "nonmembers", captions=["a blue bar at the top on white"])
    with pytest.raises(DataError, match=r"data.conditioning is auto, but .* 5 members row"):
        prepare_audit(load_policy(sd_policy(tmp_path)), progress=False)
    copy_set(tmp_path, "members", captions=["a red disc at the left on grey"])
    copy_set(tmp_path, "nonmembers", captions=[END])  # one side conditioned on nothing
    with pytest.raises(DataError, match="10 nonmembers row"):
        prepare_audit(load_policy(sd_policy(tmp_path)), progress=False)


def test_auto_with_every_caption_empty_to_the_encoder_is_the_weak_audit_and_says_so(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    copy_set(tmp_path, "members", captions=[END], count=20)
    copy_set(tmp_path, "nonmembers", captions=[END], count=20)
    result = audit(load_policy(sd_policy(tmp_path)), target=sd_target, progress=False)
    assert "the text encoder receives every caption" in result.conditioning and "weak, caption-free audit" in result.conditioning
    assert any("weak, caption-free audit" in warning for warning in result.warnings)
    empty = audit(load_policy(sd_policy(tmp_path, ", conditioning: empty", name="empty")), target=sd_target, progress=False)
    assert np.array_equal(result.attacks["loss"].member_scores, empty.attacks["loss"].member_scores)


def test_a_prompt_the_encoder_receives_as_empty(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    copy_set(tmp_path, "members")
    copy_set(tmp_path, "nonmembers")
    with pytest.raises(PolicyError, match="data.prompt is '<|endoftext|>', but the model's text encoder receives it as the empty caption"):
        prepare_audit(load_policy(sd_policy(tmp_path, f", prompt: '{END}', conditioning: prompt")), progress=False, target=sd_target)
    prepared = prepare_audit(load_policy(sd_policy(tmp_path, f", prompt: '{END}'", name="auto")), progress=False, target=sd_target)
    assert "weak, caption-free audit" in str(prepared.conditioning) and set(prepared.members.captions) == {""}


class _ConstantEncoder:
    """A custom target whose text encoder ignores its input: every caption gets one embedding."""

    def encode_captions(self, captions: list[str]) -> tuple[dict[str, object], object]:
        import torch

        distinct = list(dict.fromkeys(captions))
        return {"encoder_hidden_states": torch.ones(len(distinct), 4, 8)}, torch.tensor([distinct.index(c) for c in captions])


def test_a_custom_encoder_is_asked_for_its_embeddings() -> None:
    from naa_guard.samples.sampleset import SampleSet

    sets = {role: SampleSet.from_images(np.zeros((2, 3, 8, 8), np.float32), ("a", "b"), np.arange(2), ("a cat", "a dog"), Path(role), ()) for role in ("members", "nonmembers")}
    probe = empty_text_probe(_ConstantEncoder(), None, False)
    assert probe is not None and probe(["a cat", "a dog"]) == [True, True]
    with pytest.raises(DataError, match="as the empty caption"):
        check_encoder_conditioning("caption", "caption", None, sets, probe)
    assert check_encoder_conditioning("auto", "caption", None, sets, probe) == "encoder-empty"
