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
    created_at     timestamptz NOT NULL DEFAULT now(),
    labels         text[] NOT NULL DEFAULT '{}',    -- effective labels: the model's until corrected
    uncertainty    real,                            -- ingest-time min |p - threshold| (review queue)
    related        jsonb                            -- ids of the seed's related coverage
);
CREATE INDEX articles_story ON articles (story_id, published_at DESC);
CREATE INDEX articles_published ON articles (published_at);
CREATE INDEX articles_provider ON articles (provider, published_at);
-- Undated articles are story candidates by ingest time.
CREATE INDEX articles_undated ON articles (created_at) WHERE published_at IS NULL;
CREATE INDEX articles_labels ON articles USING gin (labels);
CREATE INDEX articles_uncertainty ON articles (uncertainty);

-- Editors' answers, beside (never inside) the model's classification; no foreign key, so a
-- takedown deletes them explicitly in its own transaction.
CREATE TABLE corrections (
    id          bigserial PRIMARY KEY,
    article_id  text NOT NULL,
    topics      text[],                             -- the complete label list after it; NULL: untouched
    quality     double precision,
    note        text,
    editor      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX corrections_article ON corrections (article_id, id);

CREATE TABLE pair_feedback (
    id          bigserial PRIMARY KEY,
    a           text NOT NULL,
    b           text NOT NULL,
    verdict     text NOT NULL,                      -- 'duplicate' | 'same_story' | 'related' | 'unrelated'
    note        text,
    editor      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pair_feedback_a ON pair_feedback (a);
CREATE INDEX pair_feedback_b ON pair_feedback (b);
