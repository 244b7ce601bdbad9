"""Built-in plugin ``gdas`` (being written)."""
