"""The composition root: `create_app(settings)` and the `tally` command."""
