"""The read path: keyset-paginated aggregates and event listings."""
