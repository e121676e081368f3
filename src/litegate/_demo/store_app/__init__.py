"""The document store example: a litegate Starlette app and the same app written naively.

It ships inside the package so that ``litegate demo`` runs from an installed wheel; the
repository's ``examples/store_app/README.md`` describes it.
"""
