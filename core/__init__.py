"""Shared by every layer, importing none of them: the plug-in registry base, the one `key=value` parser,
the resource resolver."""
