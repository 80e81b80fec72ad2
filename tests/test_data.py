"""Tests for naa_guard.samples (listing, the source kinds, decoding): every source format, preprocessing, seeded limits and errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from naa_guard.errors import DataError
from naa_guard.samples import IMAGE_EXTENSIONS, SampleSet, files_digest, load_samples, reuse_file_digests, sample_digests


def _rgb(value: int, size: tuple[int, int] = (8, 8)) -> Image.Image:
    """Return a solid RGB image whose three channels are value, value//2, 255-value."""
    return Image.new("RGB", size, (value, value // 2, 255 - value))


def _folder(root: Path, count: int, size: tuple[int, int] = (8, 8)) -> Path:
    """Return a folder of `count` solid png images named 00.png, 01.png, ..."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _rgb(10 * i, size).save(root / f"{i:02d}.png")
    return root


def _corrupt(path: Path) -> Path:
    """Return `path` after writing bytes that are not an image into it."""
    path.write_bytes(b"this is not an image at all")
    return path


# --- image folders ------------------------------------------------------------------------


def test_folder_reads_every_format_recursively_in_sorted_order(tmp_path: Path) -> None:
    formats = {
        "b.png": "PNG", "a.JPG": "JPEG", "c.jpeg": "JPEG", "sub/d.webp": "WEBP", "e.BMP": "BMP"
    }
    for name, fmt in formats.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _rgb(200).save(tmp_path / name, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "labels.npy").write_bytes(b"ignored too")

    samples = load_samples(tmp_path, size=8, channels=3)

    assert isinstance(samples, SampleSet)
    assert samples.names == ("a.JPG", "b.png", "c.jpeg", "e.BMP", "sub/d.webp")
    assert samples.images.shape == (5, 3, 8, 8) and samples.images.dtype == np.float32
    assert samples.indices.dtype == np.int64 and samples.indices.tolist() == [0, 1, 2, 3, 4]
    assert samples.captions == (None,) * 5 and len(samples) == 5
    assert samples.files == tuple(tmp_path / n for n in samples.names)
    # lossless formats keep the exact colour: 200 -> 200/127.5 - 1
    for i in (1, 3, 4):
        assert np.allclose(samples.images[i, :, 0, 0], np.array([200, 100, 55]) / 127.5 - 1)
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def test_folder_order_is_deterministic_and_skips_hidden_files(tmp_path: Path) -> None:
    for name in ("z.png", "b/a.png", "a.png", "b.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _rgb(1).save(tmp_path / name)
    _corrupt(tmp_path / "._a.png")  # macOS sidecar: would fail to decode if not skipped
    first = load_samples(tmp_path, size=8, channels=3)
    second = load_samples(tmp_path, size=8, channels=3)
    assert first.names == second.names == ("a.png", "b.png", "b/a.png", "z.png")


def test_value_range_is_exactly_minus_one_to_one(tmp_path: Path) -> None:
    img = np.zeros((4, 4), dtype=np.uint8)
    img[:, 2:] = 255
    Image.fromarray(img).save(tmp_path / "x.png")
    out = load_samples(tmp_path, size=4, channels=1).images
    assert out.min() == -1.0 and out.max() == 1.0
    assert np.array_equal(out[0, 0, :, 0], [-1.0] * 4)
    assert np.array_equal(out[0, 0, :, 3], [1.0] * 4)


def test_non_square_image_is_resized_on_short_side_and_center_cropped(tmp_path: Path) -> None:
    # 24 wide x 8 high: left third red, middle green, right blue -> after fit only green remains
    img = np.zeros((8, 24, 3), dtype=np.uint8)
    img[:, :8, 0], img[:, 8:16, 1], img[:, 16:, 2] = 255, 255, 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = load_samples(tmp_path, size=8, channels=3, fit="resize").images
    assert out.shape == (1, 3, 8, 8)
    assert np.allclose(out[0, :, :, 2:6].mean(axis=(1, 2)), [-1.0, 1.0, -1.0], atol=0.05)


def test_image_with_one_side_already_at_size_is_still_cropped(tmp_path: Path) -> None:
    _rgb(30, (8, 12)).save(tmp_path / "tall.png")
    assert load_samples(tmp_path, size=8, channels=3, fit="resize").images.shape == (1, 3, 8, 8)


def test_square_image_of_other_size_is_resized(tmp_path: Path) -> None:
    _rgb(100, (32, 32)).save(tmp_path / "big.png")
    _rgb(100, (5, 9)).save(tmp_path / "tall.png")
    out = load_samples(tmp_path, size=16, channels=3, fit="resize").images
    assert out.shape == (2, 3, 16, 16)
    assert np.allclose(out[:, 0], 100 / 127.5 - 1, atol=1 / 127.5)


def test_grayscale_to_three_channels_and_rgb_to_one(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 80).save(tmp_path / "gray.png")
    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "rgb.png")
    three = load_samples(tmp_path, size=4, channels=3).images
    assert np.allclose(three[0], 80 / 127.5 - 1)  # gray repeated on R, G, B
    one = load_samples(tmp_path, size=4, channels=1).images
    assert one.shape == (2, 1, 4, 4)
    assert np.allclose(one[1], 18 / 127.5 - 1)  # 0.299*10 + 0.587*20 + 0.114*30 = 18.15


def test_palette_image_with_transparency_loads_without_warning(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    img.save(tmp_path / "p.png", transparency=b"\x00\x80")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such an image goes straight to RGB
        out = load_samples(tmp_path, size=4, channels=3).images
    assert np.allclose(out[0, :, 0, 0], np.array([40, 50, 60]) / 127.5 - 1)


def test_rgba_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    Image.new("RGBA", (4, 4), (200, 100, 50, 0)).save(tmp_path / "clear.png")
    Image.new("LA", (4, 4), (70, 0)).save(tmp_path / "la.png")
    out = load_samples(tmp_path, size=4, channels=3).images
    assert np.allclose(out[0, :, 0, 0], np.array([200, 100, 50]) / 127.5 - 1)
    assert np.allclose(out[1], 70 / 127.5 - 1)


def test_a_palette_png_without_transparency_reports_no_dropped_alpha(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    img.save(tmp_path / "opaque.png")
    Image.new("P", (4, 4), 1).save(tmp_path / "transparent.png", transparency=1)
    samples = load_samples(tmp_path, size=4, channels=3)
    assert np.allclose(samples.images[0, :, 0, 0], np.array([40, 50, 60]) / 127.5 - 1)
    notes = " ".join(samples.notes)
    assert "1 members image(s) had an alpha channel" in notes and "transparent.png" in notes and "opaque.png" not in notes


# --- seeded limit -------------------------------------------------------------------------


def test_limit_is_seeded_sorted_and_keeps_original_indices(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "set", 20)
    a = load_samples(folder, size=8, channels=3, limit=5, seed=3)
    b = load_samples(folder, size=8, channels=3, limit=5, seed=3)
    c = load_samples(folder, size=8, channels=3, limit=5, seed=4)
    expected = np.sort(np.random.default_rng(3).choice(20, size=5, replace=False))
    assert a.indices.tolist() == expected.tolist() == b.indices.tolist()
    assert a.indices.tolist() == sorted(a.indices.tolist())
    assert a.names == tuple(f"{i:02d}.png" for i in expected)
    # each kept image is the one at its original index (solid value 10*i)
    assert np.allclose(a.images[:, 0, 0, 0], 10 * expected / 127.5 - 1)
    assert c.indices.tolist() != a.indices.tolist()
    assert np.array_equal(a.images, b.images)


def test_limit_at_or_above_count_keeps_everything(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 4)
    assert load_samples(folder, size=8, channels=3, limit=4).indices.tolist() == [0, 1, 2, 3]
    assert len(load_samples(folder, size=8, channels=3, limit=99)) == 4


def test_limit_decodes_only_the_chosen_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 10)
    chosen = set(np.random.default_rng(0).choice(10, size=3, replace=False).tolist())
    unchosen = next(i for i in range(10) if i not in chosen)
    _corrupt(folder / f"{unchosen:02d}.png")
    samples = load_samples(folder, size=8, channels=3, limit=3, seed=0)
    assert set(samples.indices.tolist()) == chosen
    with pytest.raises(DataError, match=f"{unchosen:02d}.png"):
        load_samples(folder, size=8, channels=3)  # without the limit the corrupt file is read


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(tmp_path: Path, limit: int) -> None:
    with pytest.raises(DataError, match="limit.*positive"):
        load_samples(_folder(tmp_path, 2), size=8, channels=3, limit=limit)


def test_limit_on_arrays_keeps_index_in_names(tmp_path: Path) -> None:
    data = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2) * 20
    np.save(tmp_path / "x.npy", data)
    samples = load_samples(tmp_path / "x.npy", size=4, channels=1, limit=4, seed=7)
    expected = np.sort(np.random.default_rng(7).choice(10, size=4, replace=False))
    assert samples.indices.tolist() == expected.tolist()
    assert samples.names == tuple(f"x.npy[{i}]" for i in expected)
    assert np.allclose(samples.images[:, 0, 0, 0], 20 * expected / 127.5 - 1)


# --- array files --------------------------------------------------------------------------


def test_npy_uint8_nhw_and_nhwc(tmp_path: Path) -> None:
    nhw = np.full((3, 4, 4), 255, dtype=np.uint8)
    nhwc = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    nhwc[..., 1] = 255
    np.save(tmp_path / "gray.npy", nhw)
    np.save(tmp_path / "rgb.npy", nhwc)
    gray = load_samples(tmp_path / "gray.npy", size=4, channels=3)
    rgb = load_samples(tmp_path / "rgb.npy", size=4, channels=3)
    assert gray.images.shape == (3, 3, 4, 4) and np.all(gray.images == 1.0)
    assert rgb.images.shape == (2, 3, 4, 4)
    assert np.all(rgb.images[:, 1] == 1.0) and np.all(rgb.images[:, [0, 2]] == -1.0)
    assert rgb.names == ("rgb.npy[0]", "rgb.npy[1]") and rgb.files == (tmp_path / "rgb.npy",)


def test_npy_uint8_rgba_drops_alpha_and_resizes(tmp_path: Path) -> None:
    data = np.zeros((1, 6, 12, 4), dtype=np.uint8)
    data[..., 0], data[..., 3] = 255, 0
    np.save(tmp_path / "rgba.npy", data)
    out = load_samples(tmp_path / "rgba.npy", size=4, channels=3, fit="resize").images
    assert out.shape == (1, 3, 4, 4)
    assert np.allclose(out[0, 0], 1.0) and np.allclose(out[0, 1:], -1.0)


def test_uint8_array_matches_the_same_pixels_saved_as_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 10, 14, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    (tmp_path / "png").mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / "png" / f"{i}.png")
    for channels in (1, 3):
        arr = load_samples(tmp_path / "x.npy", size=8, channels=channels, fit="resize").images
        png = load_samples(tmp_path / "png", size=8, channels=channels, fit="resize").images
        assert sample_digests(arr) == sample_digests(png)


def test_npz_prefers_images_key_else_single_array(tmp_path: Path) -> None:
    imgs = np.full((2, 4, 4), 0, dtype=np.uint8)
    np.savez(tmp_path / "named.npz", labels=np.ones((2, 4, 4), dtype=np.uint8), images=imgs)
    np.savez(tmp_path / "single.npz", pixels=np.full((3, 4, 4), 255, dtype=np.uint8))
    named = load_samples(tmp_path / "named.npz", size=4, channels=1)
    single = load_samples(tmp_path / "single.npz", size=4, channels=1)
    assert np.all(named.images == -1.0) and len(named) == 2
    assert np.all(single.images == 1.0) and len(single) == 3


def test_float_nchw_npy(tmp_path: Path) -> None:
    data = np.zeros((2, 3, 4, 4), dtype=np.float32)
    data[:, 0], data[:, 1] = 1.0, 0.5
    np.save(tmp_path / "f.npy", data)
    out = load_samples(tmp_path / "f.npy", size=4, channels=3).images
    assert out.dtype == np.float32 and out.shape == (2, 3, 4, 4)
    assert np.all(out[:, 0] == 1.0) and np.all(out[:, 1] == 0.0) and np.all(out[:, 2] == -1.0)
    gray = load_samples(tmp_path / "f.npy", size=4, channels=1).images
    assert np.allclose(gray, 2 * (0.299 + 0.587 * 0.5) - 1, atol=1e-6)


def test_float_rgba_drops_alpha(tmp_path: Path) -> None:
    data = np.zeros((1, 4, 4, 4), np.float16)
    data[:, 0], data[:, 3] = 1.0, 0.25  # red, mostly transparent
    np.save(tmp_path / "f.npy", data)
    out = load_samples(tmp_path / "f.npy", size=4, channels=3).images
    assert np.all(out[0, 0] == 1.0) and np.all(out[0, 1:] == -1.0)
    gray = load_samples(tmp_path / "f.npy", size=4, channels=1).images
    assert np.allclose(gray, 2 * 0.299 - 1, atol=1e-6)


def test_float_array_resized_stays_in_range(tmp_path: Path) -> None:
    data = np.zeros((1, 1, 3, 5), np.float64)
    data[..., 3:] = 1.0  # a sharp edge: bicubic upscaling overshoots it on both sides
    np.save(tmp_path / "f.npy", data)
    out = load_samples(tmp_path / "f.npy", size=6, channels=3, fit="resize").images
    assert out.shape == (1, 3, 6, 6) and out.min() == -1.0 and out.max() == 1.0
    assert np.array_equal(out[0, 0], out[0, 2])  # 1 channel repeated


# --- manifests ----------------------------------------------------------------------------


def test_csv_manifest_with_captions_keeps_row_order(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 3)
    rows = 'path,caption\nimg/02.png,a dog\nimg/00.png,\n./img/01.png,"a, b"\n'
    (tmp_path / "m.csv").write_text(rows)
    samples = load_samples(tmp_path / "m.csv", size=8, channels=3)
    assert samples.names == ("img/02.png", "img/00.png", "img/01.png")
    assert samples.captions == ("a dog", None, "a, b")
    assert np.allclose(samples.images[:, 0, 0, 0], np.array([20, 0, 10]) / 127.5 - 1)
    assert samples.files[0] == tmp_path / "m.csv" and len(samples.files) == 4


def test_csv_header_names_are_stripped(tmp_path: Path) -> None:
    _folder(tmp_path, 1)
    (tmp_path / "m.csv").write_text("path , caption\n00.png,hello\n")
    assert load_samples(tmp_path / "m.csv", size=8, channels=3).captions == ("hello",)


def test_jsonl_manifest(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 2)
    lines = [json.dumps({"path": "img/01.png", "caption": "x"}), "", '{"path": "img/00.png"}']
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    samples = load_samples(tmp_path / "m.jsonl", size=8, channels=3)
    assert samples.names == ("img/01.png", "img/00.png") and samples.captions == ("x", None)
    assert samples.indices.tolist() == [0, 1]


def test_manifest_limit_decodes_only_chosen_rows(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 8)
    chosen = set(np.random.default_rng(5).choice(8, size=2, replace=False).tolist())
    unchosen = next(i for i in range(8) if i not in chosen)
    _corrupt(tmp_path / "img" / f"{unchosen:02d}.png")
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"img/{i:02d}.png\n" for i in range(8)))
    samples = load_samples(tmp_path / "m.csv", size=8, channels=3, limit=2, seed=5)
    assert set(samples.indices.tolist()) == chosen
    assert samples.files == (tmp_path / "m.csv", *(tmp_path / n for n in samples.names))


def test_the_policy_key_the_outside_hint_names_lets_an_audit_read_outside_files(tmp_path: Path) -> None:
    from conftest import make_tiny_model, write_policy

    from naa_guard.audit import prepare_audit
    from naa_guard.policy import load_policy

    make_tiny_model(tmp_path / "model", channels=3)
    (tmp_path / "lists").mkdir()
    for side, offset in (("members", 0), ("nonmembers", 5)):
        (tmp_path / side).mkdir()
        for i in range(20):
            _rgb(10 * i + offset).save(tmp_path / side / f"{i:02d}.png")
        (tmp_path / "lists" / f"{side}.csv").write_text("path\n" + "".join(f"../{side}/{i:02d}.png\n" for i in range(20)))
    body = (
        "version: 1\nname: outside\nmodel: {path: ./model}\n"
        "data: {members: ./lists/members.csv, nonmembers: ./lists/nonmembers.csv%s}\n"
        "attacks: {loss: {}}\nchecks: {shift_auc: null}\nruntime: {device: cpu}\n"
    )
    with pytest.raises(DataError, match="set data.allow_outside: true in the policy"):
        prepare_audit(load_policy(write_policy(tmp_path / "refused.naa.yaml", body % "")), progress=False)
    prepared = prepare_audit(load_policy(write_policy(tmp_path / "allowed.naa.yaml", body % ", allow_outside: true")), progress=False)
    assert len(prepared.members) == len(prepared.nonmembers) == 20


def test_manifest_path_outside_its_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    _rgb(50).save(tmp_path / "outside.png")
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.write_text(json.dumps({"path": "../outside.png"}) + "\n")
    pattern = r"(?s)Line 1.*\.\./outside\.png.*outside.*set data.allow_outside: true in the policy"
    with pytest.raises(DataError, match=pattern):
        load_samples(manifest, size=8, channels=3, role="nonmembers")
    samples = load_samples(manifest, size=8, channels=3, allow_outside=True)
    assert len(samples) == 1 and samples.names == ("../outside.png",)


def test_manifest_symlink_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    _rgb(50).save(tmp_path / "secret.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link.png").symlink_to(tmp_path / "secret.png")
    (tmp_path / "sub" / "m.csv").write_text("path\nlink.png\n")
    with pytest.raises(DataError, match="outside"):
        load_samples(tmp_path / "sub" / "m.csv", size=8, channels=3)


def test_manifest_absolute_path_inside_folder_is_accepted(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 1)
    (tmp_path / "m.csv").write_text(f"path\n{tmp_path / 'img' / '00.png'}\n")
    assert load_samples(tmp_path / "m.csv", size=8, channels=3).names == ("img/00.png",)


def test_csv_manifest_without_path_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,caption\na.png,x\n")
    with pytest.raises(DataError, match=r"(?s)no 'path' column.*file, caption.*Fix"):
        load_samples(tmp_path / "m.csv", size=8, channels=3)


def test_manifest_missing_file_names_the_line(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 1)
    (tmp_path / "m.csv").write_text("path\nimg/00.png\nimg/missing.png\n")
    with pytest.raises(DataError, match=r"(?s)Line 3 .*m\.csv.*img/missing\.png.*no file exists"):
        load_samples(tmp_path / "m.csv", size=8, channels=3)


def test_jsonl_bad_json_names_the_line(tmp_path: Path) -> None:
    _folder(tmp_path / "img", 1)
    (tmp_path / "m.jsonl").write_text('{"path": "img/00.png"}\n{"path": img/00.png}\n')
    with pytest.raises(DataError, match=r"(?s)Line 2 of the members manifest.*not valid JSON.*Fix"):
        load_samples(tmp_path / "m.jsonl", size=8, channels=3)


def test_jsonl_line_without_path_key(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"file": "a.png"}\n')
    with pytest.raises(DataError, match=r"(?s)Line 1.*'path' key"):
        load_samples(tmp_path / "m.jsonl", size=8, channels=3)


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,caption\n")
    with pytest.raises(DataError, match="lists no samples"):
        load_samples(tmp_path / "m.csv", size=8, channels=3)


# --- source errors ------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)control source .*nowhere.*does not exist.*Fix"):
        load_samples(tmp_path / "nowhere", size=8, channels=3, role="control")


def test_unsupported_suffix_lists_supported_forms(tmp_path: Path) -> None:
    (tmp_path / "data.tfrecord").write_bytes(b"x")  # (.parquet is a Hugging Face dataset now: tests/test_hfdataset.py)
    with pytest.raises(DataError, match=r"(?s)'\.tfrecord'.*\.npy.*\.npz.*\.csv.*\.jsonl.*\.parquet"):
        load_samples(tmp_path / "data.tfrecord", size=8, channels=3)


def test_empty_folder_names_folder_and_extensions(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    pattern = r"(?s)nonmembers folder .* contains no images.*\.png.*\.webp"
    with pytest.raises(DataError, match=pattern):
        load_samples(tmp_path, size=8, channels=3, role="nonmembers")


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    _folder(tmp_path, 2)
    _corrupt(tmp_path / "01.png")
    with pytest.raises(DataError, match=r"(?s)Cannot decode image .*01\.png.*Fix") as info:
        load_samples(tmp_path, size=8, channels=3)
    assert info.value.__cause__ is not None


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    _rgb(1, (64, 64)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="a.png"):
        load_samples(tmp_path, size=8, channels=3)


def test_sixteen_bit_image_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match=r"(?s)deep\.png.*high-bit-depth.*8-bit"):
        load_samples(tmp_path, size=4, channels=1)


@pytest.mark.parametrize(("size", "channels", "words"), [(0, 3, "size"), (8, 2, "Channel count")])
def test_bad_size_or_channels(tmp_path: Path, size: int, channels: int, words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_samples(_folder(tmp_path, 1), size=size, channels=channels)


# --- array errors -------------------------------------------------------------------------


def _save_and_expect(tmp_path: Path, array: np.ndarray, pattern: str) -> None:
    """Save `array` as x.npy and assert that loading it raises DataError matching `pattern`."""
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError, match=pattern):
        load_samples(tmp_path / "x.npy", size=4, channels=3)


def test_npz_with_several_arrays_none_named_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros((1, 4, 4), np.uint8), b=np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"(?s)x\.npz.*2 arrays \(a, b\).*'images'.*Fix"):
        load_samples(tmp_path / "x.npz", size=4, channels=3)


def test_wrong_rank(tmp_path: Path) -> None:
    _save_and_expect(tmp_path, np.zeros((4, 4), np.uint8), r"(?s)shape \(4, 4\).*N,H,W")
    _save_and_expect(tmp_path, np.zeros((2, 4, 4), np.float32), r"(?s)float arrays.*N,C,H,W")


def test_wrong_channel_axis_hints_transpose(tmp_path: Path) -> None:
    _save_and_expect(tmp_path, np.zeros((2, 3, 8, 8), np.uint8), r"transpose\(0, 2, 3, 1\)")
    _save_and_expect(tmp_path, np.zeros((2, 8, 8, 3), np.float32), r"transpose\(0, 3, 1, 2\)")


@pytest.mark.parametrize(("low", "high"), [(-1.0, 2.5), (-0.5, 1.0), (0.0, 1.25)])
def test_float_out_of_range_reports_min_and_max(tmp_path: Path, low: float, high: float) -> None:
    data = np.zeros((2, 3, 4, 4), np.float32)
    data[0, 0, 0, 0], data[1, 0, 0, 0] = low, high
    pattern = rf"(?s)values in \[{low:g}, {high:g}\].*expected \[0, 1\].*\(a \+ 1\) / 2"
    _save_and_expect(tmp_path, data, pattern)


def test_float_non_finite(tmp_path: Path) -> None:
    data = np.zeros((3, 1, 4, 4), np.float64)
    data[2, 0, 1, 1] = np.nan
    _save_and_expect(tmp_path, data, r"(?s)NaN or infinite.*first in sample 2")


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.bool_, np.int64])
def test_other_dtypes_are_refused(tmp_path: Path, dtype: type) -> None:
    pattern = r"(?s)dtype.*expected uint8.*float16/32/64"
    _save_and_expect(tmp_path, np.zeros((2, 4, 4), dtype), pattern)


def test_zero_samples(tmp_path: Path) -> None:
    _save_and_expect(tmp_path, np.zeros((0, 4, 4), np.uint8), "holds no samples")


def test_corrupt_array_file(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"(?s)Cannot read the array file .*x\.npy.*np\.save"):
        load_samples(tmp_path / "x.npy", size=4, channels=3)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="o.npy"):
        load_samples(tmp_path / "o.npy", size=4, channels=3)


# --- digests ------------------------------------------------------------------------------


def test_sample_digests_match_identical_pixels_only() -> None:
    images = np.zeros((3, 1, 2, 2), np.float32)
    images[2, 0, 0, 0] = 0.5
    digests = sample_digests(images)
    assert len(digests) == 3 and all(len(d) == 64 for d in digests)
    assert digests[0] == digests[1] != digests[2]
    assert sample_digests(images.astype(np.float64)) == digests  # hashed as float32


def test_files_digest_depends_on_content_name_and_not_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    base = files_digest([a, b])
    assert files_digest([b, a]) == base and len(base) == 64
    b.write_bytes(b"twO")
    assert files_digest([a, b]) != base
    b.write_bytes(b"two")
    b.rename(tmp_path / "c.bin")
    assert files_digest([a, tmp_path / "c.bin"]) != base
    with pytest.raises(DataError, match="a.bin"):
        a.unlink()
        files_digest([a])


def test_folder_files_cover_the_whole_listing_even_when_limited(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 6)
    samples = load_samples(folder, size=8, channels=3, limit=2)
    assert len(samples.files) == 6 and len(samples) == 2


def test_files_are_read_once_inside_reuse_file_digests_and_again_outside(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"one")
    with reuse_file_digests():
        first = files_digest([a])
        a.unlink()  # a second read would raise: the digest must come from the first one
        assert files_digest([a]) == first
    with pytest.raises(DataError, match="a.bin"):
        files_digest([a])  # outside an audit nothing is remembered
