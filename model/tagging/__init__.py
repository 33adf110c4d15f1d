"""Per-article predictions: feature matrices, the topic tagger and the score heads (quality, heat)."""
