"""One module per command group; each has a `register(app)` that adds its commands."""
