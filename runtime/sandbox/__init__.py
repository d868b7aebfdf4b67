"""Tenant scripts, run where they cannot hurt the host.

``policy`` compiles a script (caps, RestrictedPython and our own transformer);
``worker`` is the program a sandbox process runs; ``pool`` keeps those processes,
talks to them over pipes in JSON and kills one that overruns; ``budget`` says how
much a run may use. The host side of a script's ``ctx`` API, and the hooks into the
record service, are in :mod:`loomwork.runtime.scripts`.
"""
