"""Articles in relation to each other: pair verdicts, near-duplicates, stories, dedup and vector search."""
