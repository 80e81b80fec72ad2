"""Pre-flight checks of a loaded policy: missing sample sources and model configs are reported
before torch, diffusers or scikit-learn load.
"""

from __future__ import annotations

from naa_guard.policy.schema import Policy


def preflight(policy: Policy) -> None:
    """Return None; raise the error an audit would meet first for a missing or unusable model folder or data path.

    Reads folder listings and small JSON configs only: no torch, diffusers or scikit-learn, so a
    wrong path is reported in well under a second instead of after the model libraries load.
    """
    from naa_guard.samples import check_source
    from naa_guard.targets import read_model_info

    if policy.model.single_file is not None:
        from naa_guard.targets.detect import read_single_file_info

        read_single_file_info(policy.model.single_file, policy.model.config, policy.model.unet_subfolder)
    elif policy.model.loader is None and policy.model.path is not None:
        read_model_info(policy.model.path, policy.model.unet_subfolder)
    if policy.model.reference not in (None, "base"):
        read_model_info(policy.model.reference, key="model.reference")  # type: ignore[arg-type]  # a Path here
    for role in ("members", "nonmembers", "control"):
        source = getattr(policy.data, role)
        if source is not None:
            check_source(source, role)
