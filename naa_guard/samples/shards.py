"""webdataset shards as sample sets: a ``.tar``, a folder of ``.tar`` shards or a brace pattern (``shards-{000..009}.tar``).

Local files only: a URL is an error that says how to fetch the shards first. Each shard is read
as a stream (``tarfile`` mode ``r|``), never extracted: listing records where each image's bytes
lie in its shard (the member's data offset and size) and reads the small caption members; a chunk
later decodes its images by seeking to those offsets. A member name is only a key: one with
``..`` or an absolute path names a sample and nothing is ever written.

Members are grouped into samples as webdataset does, by key within a shard: ``a.b.jpg`` has the
key ``a.b`` and the field ``jpg`` (the last extension, any case). The image is the first present
field of jpg / jpeg / png / webp, or the one ``data.image_column`` names; the caption is the
``txt`` field, or with ``data.caption_column`` the field of that name or that key of the sample's
``json``. A sample without a caption is a missing caption, as in every source. A report names a
sample ``SHARD:KEY``.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from naa_guard.errors import DataError
from naa_guard.samples.captions import caption_value
from naa_guard.samples.decode import decode_bytes, stack
from naa_guard.samples.folder import IMAGE_EXTENSIONS
from naa_guard.samples.sampleset import Notes, SampleSet, choose
from naa_guard.userfiles import open_regular

__all__ = ["IMAGE_FIELDS", "expand_braces", "is_shards", "list_shards", "shard_files", "url_problem"]

IMAGE_FIELDS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
SHARD_SUFFIX = ".tar"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://|(pipe|https?|s3|gs|hf|ftp|file):)", re.IGNORECASE)  # also webdataset's pipe:CMD
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_LIST = re.compile(r"\{([^{}]*,[^{}]*)\}")
_MAX_CAPTION = 1 << 20  # a caption member larger than this is not a caption
_FIX_SHARD = "Fix: write the shard again (tar cf, webdataset's ShardWriter or img2dataset), or remove it from the source."


def url_problem(source: str | Path, role: str) -> str | None:
    """Return why a source that is a URL cannot be read (naa-guard reads local files only), else None."""
    text = str(source).strip()
    if not _URL.match(text):
        return None
    return (
        f"The {role} source {text} is a URL; naa-guard reads local files only and never downloads (an audit of what it cannot "
        "read again certifies nothing). Fix: download the shards first (e.g. curl -O URL, aws s3 cp, gsutil cp, or "
        f"huggingface-cli download --repo-type dataset NAME --local-dir DIR) and point data.{role} at the local .tar files, "
        "their folder or a brace pattern such as DIR/shard-{000000..000009}.tar."
    )


def expand_braces(text: str) -> list[str]:
    """Return ``text`` with its brace patterns expanded, as webdataset does: ``{000..009}`` (zero-padded) and ``{a,b}``."""
    match = _RANGE.search(text) or _LIST.search(text)
    if match is None:
        return [text]
    head, tail = text[: match.start()], text[match.end() :]
    if match.re is _RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        low, high = int(first), int(last)
        step = 1 if high >= low else -1
        options = [str(n).zfill(width) for n in range(low, high + step, step)]
    else:
        options = match.group(1).split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def has_braces(path: Path) -> bool:
    """Return True when ``path`` holds a brace pattern ({000..009} or {a,b})."""
    return bool(_RANGE.search(str(path)) or _LIST.search(str(path)))


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _is_shard_name(file: Path, root: Path) -> bool:
    return file.name.lower().endswith(SHARD_SUFFIX) and not file.is_dir() and not _hidden(file, root)


def shard_files(path: Path, role: str) -> list[Path]:
    """Return the shards of a source: the .tar file, the .tar files under a folder (sorted), or a brace pattern's files."""
    if has_braces(path):
        files = [Path(name) for name in expand_braces(str(path))]
        missing = [str(file) for file in files if not file.exists()]
        if missing:
            raise DataError(
                f"The {role} source {path} is a brace pattern; {len(missing)} of its {len(files)} shard(s) do not exist, e.g. {', '.join(missing[:3])}. "
                "Fix: check the pattern's range against the shards on disk, or point the source at their folder."
            )
        return files
    if path.is_dir():
        return sorted((p for p in path.rglob("*") if _is_shard_name(p, path)), key=lambda p: p.as_posix())
    return [path]


def is_shards(path: Path) -> bool:
    """Return True for a .tar file, a brace pattern or a folder holding .tar shards; raise when a folder holds shards and images."""
    if has_braces(path):
        return True
    if path.is_file():
        return path.suffix.lower() == SHARD_SUFFIX
    if not path.is_dir():
        return False
    shards = next((p for p in path.rglob("*") if _is_shard_name(p, path)), None)  # stops at the first
    if shards is None:
        return False
    images = next((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(p, path)), None)
    if images is not None:
        raise DataError(
            f"The folder {path} holds both webdataset shards (e.g. {shards.name}) and image files (e.g. {images.name}); "
            "naa-guard cannot tell which ones are the set. Fix: keep the shards and the images in separate folders, and point the source at one."
        )
    return True


@dataclass
class _Sample:
    key: str
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)  # field -> (data offset, size)
    texts: dict[str, bytes] = field(default_factory=dict)  # small fields read while listing (txt, json, the caption's)


def _scan(shard: Path, role: str, text_fields: set[str]) -> list[_Sample]:
    """Return the samples of one shard in order, with where each member's bytes lie; read as a stream."""
    fix = "Fix: point the source at regular .tar files (a pipe or device is never read)."
    samples: dict[str, _Sample] = {}
    with open_regular(shard, DataError, f"The {role} shard", fix) as handle:
        try:
            with tarfile.open(fileobj=handle, mode="r|") as tar:
                for member in tar:
                    if not member.isreg():
                        continue  # folders, links and devices in a shard are no sample's fields
                    name = member.name
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(".") or "." not in base:
                        continue  # webdataset skips names without an extension
                    key, suffix = name.rsplit(".", 1)
                    suffix = suffix.lower()
                    sample = samples.setdefault(key, _Sample(key))
                    if suffix in sample.fields:
                        raise DataError(f"The {role} shard {shard} holds the member {name} twice (key '{key}', field '{suffix}'); a sample's fields must be unique. {_FIX_SHARD}")
                    if member.sparse is not None:
                        raise DataError(f"The {role} shard {shard} stores {name} as a sparse file, which cannot be read by offset. {_FIX_SHARD}")
                    sample.fields[suffix] = (member.offset_data, member.size)
                    if suffix in text_fields and member.size <= _MAX_CAPTION:
                        data = tar.extractfile(member)
                        sample.texts[suffix] = data.read() if data is not None else b""
        except tarfile.TarError as exc:
            raise DataError(f"Cannot read the {role} shard {shard} as an uncompressed tar ({type(exc).__name__}: {exc}); it is truncated, compressed or not a tar. {_FIX_SHARD}") from None
    return list(samples.values())


class _ShardReader:
    """Decodes shard samples at given rows by reading their image bytes at the offsets recorded when listing."""

    def __init__(self, shards: tuple[Path, ...], shard: np.ndarray, offset: np.ndarray, size: np.ndarray, keys: tuple[str, ...], image_size: int, channels: int, role: str, notes: Notes) -> None:
        self.shards, self.shard, self.offset, self.nbytes, self.keys = shards, shard, offset, size, keys
        self.size, self.channels, self.role, self.notes = image_size, channels, role, notes

    def read(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.empty((0, self.channels, self.size, self.size), dtype=np.float32)
        decoded: list[np.ndarray | None] = [None] * len(rows)
        for shard in np.unique(self.shard[rows]):
            fix = "Fix: keep the shards unchanged while the audit runs."
            with open_regular(self.shards[int(shard)], DataError, f"The {self.role} shard", fix) as handle:
                for position in np.flatnonzero(self.shard[rows] == shard):
                    row = int(rows[position])
                    handle.seek(int(self.offset[row]))
                    data = handle.read(int(self.nbytes[row]))
                    decoded[position] = self._decode(data, row)
        return stack(decoded)  # type: ignore[arg-type]

    def origin(self, row: int) -> str:
        return f"{self.shards[int(self.shard[row])]}:{self.keys[row]}"

    def _decode(self, data: bytes, row: int) -> np.ndarray:
        where = f"Sample {self.origin(row)} of the {self.role} set"
        if len(data) != int(self.nbytes[row]):
            raise DataError(f"{where}: its shard ended before the image's {int(self.nbytes[row])} bytes (read {len(data)}); the shard changed or is truncated. {_FIX_SHARD}")
        return decode_bytes(data, self.size, self.channels, self.notes, where, self.origin(row), "re-encode the image or drop that sample from the shard")


class _ShardNotes(Notes):
    """A set's preprocessing notes, headed by what the shards held (image field, caption source)."""

    def __init__(self, notes: Notes, origin: str) -> None:
        super().__init__(notes.role, notes.size, notes.fit)
        self.origin = origin

    def lines(self, total: int) -> tuple[str, ...]:
        return (self.origin, *super().lines(total))


def _text(sample: _Sample, name: str, where: str) -> str | None:
    raw = sample.texts.get(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: its {name} field is not UTF-8 text ({exc}); a caption read with replaced characters is not the one trained with. {_FIX_SHARD}") from None


def _caption(sample: _Sample, caption_name: str | None, where: str) -> str | None:
    if caption_name is None:
        return caption_value(_text(sample, "txt", where), f"{where} (field txt)")
    if caption_name.lower() in sample.fields:
        return caption_value(_text(sample, caption_name.lower(), where), f"{where} (field {caption_name})")
    if "json" not in sample.texts:
        return None
    try:
        record = json.loads(_text(sample, "json", where) or "")
    except ValueError as exc:
        raise DataError(f"{where}: its json field is not valid JSON ({exc}). {_FIX_SHARD}") from None
    value = record.get(caption_name) if isinstance(record, dict) else None
    return caption_value(value, f"{where} (json key '{caption_name}')")


def list_shards(
    path: Path, *, size: int, channels: int, limit: int | None, seed: int, role: str, notes: Notes,
    image_field: str | None, caption_name: str | None,
) -> SampleSet:  # fmt: skip
    """Return the samples of webdataset shards as a sample set: captions read, images not yet decoded."""
    shards = tuple(shard_files(path, role))
    if not shards:
        raise DataError(f"The {role} source {path} holds no {SHARD_SUFFIX} shards. Fix: point data.{role} at the shards' folder, a shard or a brace pattern.")
    wanted = (image_field.lower(),) if image_field else IMAGE_FIELDS
    text_fields = {"txt", "json", *([caption_name.lower()] if caption_name else [])}
    shard_of: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    keys: list[str] = []
    captions: list[str | None] = []
    used: dict[str, int] = {}  # image field -> samples, for the report
    for number, shard in enumerate(shards):
        found = _scan(shard, role, text_fields)
        for sample in found:
            where = f"Sample {shard}:{sample.key} of the {role} set"
            present = [name for name in wanted if name in sample.fields]
            if len(present) > 1:
                raise DataError(
                    f"{where} holds {len(present)} image fields ({', '.join(present)}); naa-guard cannot tell which one the model was trained on. "
                    "Fix: set data.image_column to the field your training read (e.g. png), or keep one image per sample."
                )
            image = present[0] if present else None
            if image is None:
                raise DataError(
                    f"{where} has no image field: it holds {', '.join(sorted(sample.fields))}, expected one of {', '.join(wanted)}"
                    f"{' (data.image_column)' if image_field else ''}. Fix: drop the incomplete sample from the shard, or set data.image_column to the field that holds the images."
                )
            offset, nbytes = sample.fields[image]
            used[image] = used.get(image, 0) + 1
            shard_of.append(number)
            offsets.append(offset)
            sizes.append(nbytes)
            keys.append(sample.key)
            captions.append(_caption(sample, caption_name, where))
    if caption_name is not None and keys and all(caption is None for caption in captions):  # a typo would audit caption-free
        raise DataError(
            f"data.caption_column is '{caption_name}', but no sample of the {role} shards at {path} holds a caption there (neither a "
            f"'{caption_name}' field nor a '{caption_name}' key of its json, or only blank ones). Fix: set data.caption_column to the "
            "field or json key your training read the captions from, or remove it to read the txt field."
        )
    if not keys:
        raise DataError(f"The {role} shards at {path} ({len(shards)} file(s)) hold no samples. Fix: point data.{role} at shards that hold the images.")
    indices = choose(len(keys), limit, seed)
    names = tuple(f"{_shard_name(shards[shard_of[i]], path)}:{keys[i]}" for i in indices)
    caption_source = f"the {caption_name} field or json key" if caption_name else "the txt field"
    log = _ShardNotes(notes, f"the {role} set is {len(keys)} sample(s) in {len(shards)} webdataset shard(s) at {path}; images from the {' / '.join(f'{name} ({count})' if len(used) > 1 else name for name, count in used.items())} field, captions from {caption_source}")
    reader = _ShardReader(
        shards, np.asarray(shard_of, dtype=np.int32)[indices], np.asarray(offsets, dtype=np.int64)[indices], np.asarray(sizes, dtype=np.int64)[indices],
        tuple(keys[i] for i in indices), size, channels, role, log,
    )  # fmt: skip
    return SampleSet(reader, np.arange(len(indices), dtype=np.int64), names, indices, tuple(captions[i] for i in indices), path, shards, log)


def _shard_name(shard: Path, source: Path) -> str:
    if source.is_dir():
        return shard.relative_to(source).as_posix()
    return shard.name

