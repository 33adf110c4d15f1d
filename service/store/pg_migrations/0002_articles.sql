-- Everything the service keeps: the live model version, articles with their vectors,
-- classifications, stories and duplicate links, and the editors' corrections and pair labels.
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE articles (
    seq            bigserial UNIQUE NOT NULL,       -- insertion order (iter_since)
    id             text PRIMARY KEY,                -- hash of the canonical URL: variants collide here
    canonical_url  text UNIQUE,
    record         jsonb NOT NULL,                  -- Article.to_record(): seed field names
    embedding      vector(384) NOT NULL,            -- unit vector (MiniLM); halfvec needs pgvector >= 0.7
    story_id       text NOT NULL,
    classification jsonb NOT NULL,                  -- Classification.to_record()
    duplicate_of   text,
    model_version  text,
    published_at   timestamptz,
    provider       text,                            -- Provider.key: lower case, no www.
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX articles_story ON articles (story_id, published_at DESC);
CREATE INDEX articles_published ON articles (published_at);
CREATE INDEX articles_provider ON articles (provider, published_at);
-- Undated articles are story candidates by ingest time.
CREATE INDEX articles_undated ON articles (created_at) WHERE published_at IS NULL;

CREATE TABLE corrections (
    id          bigserial PRIMARY KEY,
    article_id  text NOT NULL REFERENCES articles (id) ON DELETE CASCADE,
    field       text NOT NULL,                      -- 'topics' | 'quality' | 'heat' | 'story_id' | ...
    value       jsonb NOT NULL,
    author      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX corrections_article ON corrections (article_id, created_at);

CREATE TABLE pair_feedback (
    id          bigserial PRIMARY KEY,
    a_id        text NOT NULL,
    b_id        text NOT NULL,
    label       text NOT NULL,                      -- 'duplicate' | 'same_story' | 'related' | 'unrelated'
    author      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (a_id < b_id),                            -- one row per unordered pair
    UNIQUE (a_id, b_id, author)
);
