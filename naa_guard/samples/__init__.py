"""The sample sets an audit compares: members, non-members and an optional control set.

One module per source kind (:mod:`~naa_guard.samples.folder`, :mod:`~naa_guard.samples.manifest`,
:mod:`~naa_guard.samples.arrays`), the captions trainers keep beside the images
(:mod:`~naa_guard.samples.captions`), decoding and fitting to the model's input
(:mod:`~naa_guard.samples.decode`, :mod:`~naa_guard.samples.fit`), content digests, the text each
image is queried with (:mod:`~naa_guard.samples.conditioning`) and the per-chunk summaries the
validity checks read (:mod:`~naa_guard.samples.summary`). Nothing here knows of models, scores
or verdicts.
"""

from __future__ import annotations

from naa_guard.samples.arrays import ARRAY_SUFFIXES
from naa_guard.samples.digests import files_digest, reuse_file_digests, sample_digests
from naa_guard.samples.folder import IMAGE_EXTENSIONS
from naa_guard.samples.listing import check_source, list_samples, load_samples
from naa_guard.samples.manifest import MANIFEST_SUFFIXES
from naa_guard.samples.sampleset import SampleSet

__all__ = [
    "ARRAY_SUFFIXES", "IMAGE_EXTENSIONS", "MANIFEST_SUFFIXES", "SampleSet", "check_source", "files_digest",
    "list_samples", "load_samples", "reuse_file_digests", "sample_digests",
]  # fmt: skip
