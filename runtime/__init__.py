"""How an app *runs*: compiled models, schema sync, the record service, the query
engine and permissions.

Imports no Flask and nothing from the shell, designer or plugins. Every service
takes an explicit :class:`~loomwork.runtime.context.Context`.
"""
import pluggy

#: Marker for hook implementations. The same object as :data:`loomwork.hookimpl`;
#: kept here so built-in plugins need not import the web shell.
hookimpl = pluggy.HookimplMarker("loomwork")
