"""pytest entry point of naa-guard (registered through the ``pytest11`` entry point).

Placeholder until the plugin lands: it registers nothing and imports nothing heavy.
"""

from __future__ import annotations
