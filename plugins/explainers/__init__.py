"""Built-in xray-xai plugins, discovered only through the entry points in pyproject.toml."""
