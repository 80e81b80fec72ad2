"""Scores: every sample of a set through an attack, in chunks of batches.

:mod:`~naa_guard.scoring.runner` cuts sets into chunks and runs them (here or on the ranks of
:mod:`~naa_guard.scoring.distributed`); :mod:`~naa_guard.scoring.models` loads the model only when
a chunk needs it; :mod:`~naa_guard.scoring.scorer` takes scores from the score cache, the chunk
store (:mod:`~naa_guard.scoring.chunks`) or the model, under the keys of
:mod:`~naa_guard.scoring.keys`. Before any attack, :mod:`~naa_guard.scoring.samplepass` reads each
chunk once for the checks and stores a latent model's encodings
(:mod:`~naa_guard.scoring.encodings`); stored files carry their key (:mod:`~naa_guard.scoring.keyedfiles`).
A ``--nproc`` launcher checks without the model (:mod:`~naa_guard.scoring.storedfirst`,
:mod:`~naa_guard.scoring.modelguard`) and keeps the ranks' log (:mod:`~naa_guard.scoring.ranklog`).
Nothing here knows of metrics, gates or reports.
"""

from __future__ import annotations
