"""What the feature packages (ingest, query, plans) all stand on: settings, database, auth,
errors, the event vocabulary, counts, logging, metrics.

Nothing here imports `ingest`, `query`, `plans` or `tally` (checked by import-linter in the test suite).
"""
