"""The public surface: __all__ complete and sorted, every error exported and documented."""

from __future__ import annotations

import naa_guard
from naa_guard import errors


def test_all_is_sorted_and_importable() -> None:
    assert naa_guard.__all__ == sorted(naa_guard.__all__)
    for name in naa_guard.__all__:
        assert getattr(naa_guard, name) is not None


def test_every_error_is_exported_documented_and_in_the_tree() -> None:
    error_classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, errors.NaaGuardError)]
    for cls in error_classes:
        assert cls.__name__ in naa_guard.__all__
        assert cls.__doc__ and cls.__doc__.startswith("Raised")
        assert cls.__name__ in errors.__doc__
    assert sorted(errors.__all__) == sorted(cls.__name__ for cls in error_classes)
