"""nasreg built-in plugin (placeholder)."""
