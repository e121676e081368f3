"""Django on litegate: ``DATABASES = {"default": {"ENGINE": "litegate.django", "NAME": ...}}``.

Django's SQLite backend on :mod:`litegate.sqlite3`: every Django connection (one per thread)
is a handle on one litegate engine per file, so the threads of a server share one write lane
with group commit and one read pool, and ``database is locked`` does not happen between them.
``transaction.atomic()`` begins ``BEGIN IMMEDIATE`` (a read-modify-write in it never loses an
update). Foreign-key checks are on, as Django has them. ``OPTIONS`` takes Django's SQLite
options plus ``"litegate": {...}`` (litegate's engine options, e.g. ``{"synchronous":
"NORMAL"}``).

Requires the extra ``litegate[django]``. The backend itself is :mod:`litegate.django.base`.
"""

from __future__ import annotations

__all__: tuple[str, ...] = ()
