-- Vector generations: one encoder's vectors for the stored articles each (model.store.base.VectorGeneration).
-- The articles' own column stays generation 0 (no copy of the archive); a later encoder's vectors
-- live beside it in generation_vectors, keyed (generation, article id), each generation with its
-- own partial HNSW index, built when it is filled (PgArticleStore.mark_generation_filled). A
-- replica reads and writes the generation of the bundle it serves, so a query vector never meets
-- another encoder's; the switch of the live one is one transaction every replica sees.
CREATE TABLE vector_generations (
    id             integer PRIMARY KEY,
    vectors_id     text NOT NULL,
    state          text NOT NULL CHECK (state IN ('building', 'complete', 'live', 'retired')),
    filled_seq     bigint NOT NULL DEFAULT 0,   -- every row up to this seq has its vector here
    bundle_version text,                        -- the bundle last served on it
    created_at     timestamptz NOT NULL DEFAULT now(),
    switched_at    timestamptz
);
CREATE UNIQUE INDEX vector_generations_by_encoder ON vector_generations (vectors_id);
CREATE UNIQUE INDEX vector_generations_one_live ON vector_generations ((true)) WHERE state = 'live';

-- No foreign key: a takedown deletes an article's vectors explicitly in its own transaction.
CREATE TABLE generation_vectors (
    generation integer NOT NULL,
    article_id text NOT NULL,
    embedding  vector(384) NOT NULL,
    PRIMARY KEY (generation, article_id)
);
ALTER TABLE generation_vectors ALTER COLUMN embedding SET STORAGE PLAIN;

-- A row ingested while another generation is live has no generation-0 vector (NULL): a rollback
-- to generation 0 embeds those rows first. HNSW leaves NULLs out of its graph.
ALTER TABLE articles ALTER COLUMN embedding DROP NOT NULL;
CREATE INDEX articles_without_vector ON articles (seq) WHERE embedding IS NULL;

-- A claim's vector is of its replica's generation: claims are story candidates of that generation only.
ALTER TABLE story_claims ADD COLUMN generation integer NOT NULL DEFAULT 0;

-- The one re-embedding worker across replicas (take_reembed_lease): a row with its holder and
-- expiry, by the database's clock so replicas' clocks need not agree.
CREATE TABLE reembed_lease (
    id         integer PRIMARY KEY CHECK (id = 1),
    owner      text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The vectors already stored are generation 0, live: the encoder recorded for them, else MiniLM's
-- (the only encoder there was). An empty store records none: its first bundle's encoder starts it.
INSERT INTO vector_generations (id, vectors_id, state, switched_at)
SELECT 0, COALESCE((SELECT value FROM meta WHERE key = 'vectors_id'), 'sentence-transformers/all-MiniLM-L6-v2'),
       'live', now()
WHERE EXISTS (SELECT FROM meta WHERE key = 'vectors_id') OR EXISTS (SELECT FROM articles);

-- ingest_window_unchanged (0005) for one generation: the rows and claims of `generation` only.
CREATE FUNCTION ingest_window_unchanged(
    namespace integer, keys integer[], seen pg_snapshot,
    low timestamptz, high timestamptz, probe vector, reach double precision, generation integer
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    key integer;
BEGIN
    FOREACH key IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(namespace, key);
    END LOOP;
    RETURN NOT EXISTS (
        SELECT FROM articles AS a
        LEFT JOIN generation_vectors AS v ON v.generation = ingest_window_unchanged.generation
                                         AND v.article_id = a.id
        WHERE a.xact >= pg_snapshot_xmin(seen) AND NOT pg_visible_in_snapshot(a.xact, seen)
          AND (a.published_at BETWEEN low AND high
               OR (a.published_at IS NULL AND a.created_at BETWEEN low AND high))
          AND (CASE WHEN ingest_window_unchanged.generation = 0 THEN a.embedding ELSE v.embedding END)
              IS NOT NULL
          AND (reach IS NULL
               OR (CASE WHEN ingest_window_unchanged.generation = 0 THEN a.embedding ELSE v.embedding END)
                  <=> probe <= reach)
    ) AND NOT EXISTS (
        SELECT FROM story_claims AS c
        WHERE NOT pg_visible_in_snapshot(c.xact, seen) AND c.generation = ingest_window_unchanged.generation
          AND (c.published_at BETWEEN low AND high
               OR (c.published_at IS NULL AND c.created_at BETWEEN low AND high))
          AND (reach IS NULL OR c.embedding <=> probe <= reach)
    );
END
$$;
