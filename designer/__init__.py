"""The admin designer (web UI for objects, fields, layouts and rules); built in a later issue."""
