"""What an app *is*: JSON Schemas per kind, the typed model, package loading,
diffs and the versioned metadata store.

Imports neither Flask nor :mod:`loomwork.runtime`; SQLAlchemy only in :mod:`.store`.
"""
