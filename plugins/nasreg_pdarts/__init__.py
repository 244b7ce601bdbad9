"""Built-in plugin ``pdarts`` (being written)."""
