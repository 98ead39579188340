"""Storage and provenance: atomic writes, content digests and derived seeds, and the file digest store."""
