-- Approximate search for /v1/similar (cosine). m / ef_construction are pgvector's defaults.
-- On a large live table, build it with CREATE INDEX CONCURRENTLY outside a migration instead.
CREATE INDEX articles_embedding_hnsw ON articles
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
