"""The write path: Segment-compatible batched ingest with exact deduplication by messageId."""
