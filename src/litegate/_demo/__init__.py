"""``litegate demo``: the thread demo (:mod:`.threads`) and the web demo (:mod:`.web`: the
store app in :mod:`.store_app` under uvicorn, driven by :mod:`.load`)."""

from __future__ import annotations

__all__ = ()  # nothing here: the CLI imports .cli, tests import the modules they test
