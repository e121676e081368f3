"""The document store example: a litegate Starlette app and the same app written naively."""
