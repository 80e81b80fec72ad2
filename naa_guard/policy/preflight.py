"""Pre-flight checks of a loaded policy: every problem found without a model, reported together.

The caller's output paths and baseline, missing model configs and sample sources, sets that
cannot be listed and gates the listed counts cannot resolve are reported before torch, diffusers or
scikit-learn load, and all at once: one run shows every one of them, in the CLI and in pytest alike
(both call :func:`preflight`, with their outputs and baseline first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from naa_guard.errors import NaaGuardError
from naa_guard.policy.schema import Policy

# The verdict stage's check that the listed counts can resolve every gate
# (naa_guard.verdict.resolvable.check_policy_counts), handed in by the faces: the policy stage
# sits below the verdicts and never imports them.
CountCheck = Callable[[Policy, "int | None"], object]


def _model_configs(policy: Policy) -> None:
    from naa_guard.targets import read_model_info
    from naa_guard.targets.flow_info import with_text_settings

    model, where = policy.model, str(policy.source or policy.name)
    infos = []
    if model.single_file is not None:
        from naa_guard.targets.detect import read_single_file_info

        infos.append(read_single_file_info(model.single_file, model.config, model.unet_subfolder, variant=model.variant))
    elif model.loader is None and model.path is not None:
        infos.append(read_model_info(model.path, model.unet_subfolder, variant=model.variant))
    if model.reference not in (None, "base"):
        infos.append(read_model_info(model.reference, key="model.reference", variant=model.variant))  # type: ignore[arg-type]  # a Path here
    for info in infos:  # model.max_sequence_length / model.guidance where they apply (the reference is conditioned alike)
        with_text_settings(info, max_sequence_length=model.max_sequence_length, guidance=model.guidance, where=where)


def model_free_problems(
    policy: Policy, limit: int | None = None, *, counts: CountCheck | None = None, model: bool = True, also: Sequence[Callable[[], object]] = (),
) -> list[NaaGuardError]:  # fmt: skip
    """Return every problem found without loading a model, in the order an audit would meet them.

    ``also``: the caller's own checks, run first (its output paths, its baseline); ``model``: read
    the model folder's configs; ``counts``: the check, called with the policy and ``limit`` (per side,
    None: none), that lists the sets (no image decoded) and that the counts as evaluated can
    resolve every gate (:func:`naa_guard.verdict.resolvable.check_policy_counts`).
    """
    from naa_guard.samples import check_source

    problems: list[NaaGuardError] = []

    def attempt(check: Callable[[], object]) -> bool:
        try:
            check()
        except NaaGuardError as exc:
            problems.append(exc)
            return False
        return True

    for check in also:
        attempt(check)
    if model:
        attempt(lambda: _model_configs(policy))
    roles = [role for role in ("members", "nonmembers", "control") if getattr(policy.data, role) is not None]
    found = [attempt(lambda role=role: check_source(getattr(policy.data, role), role)) for role in roles]  # type: ignore[misc]
    if policy.data.keys:
        from naa_guard.samples.keys import check_key_overlap

        attempt(lambda: check_key_overlap(policy.data.keys))  # type: ignore[arg-type]
    if counts and all(found):  # listing a set that is not there would only repeat its problem
        attempt(lambda: counts(policy, limit))
    return problems


def preflight(policy: Policy, limit: int | None = None, *, counts: CountCheck | None = None, model: bool = True, also: Sequence[Callable[[], object]] = ()) -> None:
    """Return None; raise every problem :func:`model_free_problems` finds, together in one error.

    Reads folder listings and small JSON configs only (and with ``counts`` the sets' listings): no
    torch, diffusers or scikit-learn, so a wrong path is reported in well under a second instead of
    after the model libraries load. One problem is raised as it is; several as one error that lists
    them all (of their type when they share one, else a NaaGuardError).
    """
    problems = model_free_problems(policy, limit, counts=counts, model=model, also=also)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        kinds = {type(problem) for problem in problems}
        kind = kinds.pop() if len(kinds) == 1 else NaaGuardError  # e.g. all DataError; mixed: the common base
        listed = "\n".join(f"{i}. {type(problem).__name__}: {problem}" for i, problem in enumerate(problems, 1))
        raise kind(f"{policy.source or policy.name}: {len(problems)} problems, all found before any model loads; fix each of them:\n{listed}")
