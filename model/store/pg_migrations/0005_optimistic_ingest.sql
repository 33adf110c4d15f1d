-- Optimistic story linking (PgArticleStore.ingest_linked). A replica reads an article's story
-- candidates and decides its story without any lock. It then takes the window's locks only for
-- one short statement: check that no row its read could not see has landed near the article,
-- and record the decision as a claim (below). The article row itself, whose HNSW insert costs
-- milliseconds, is written after the locks are released.
--
-- `xact` is the writing transaction's id, so a check can tell which rows a snapshot missed.
-- Rows older than this migration keep NULL (every snapshot from now on sees them).
ALTER TABLE articles ADD COLUMN xact xid8;
ALTER TABLE articles ALTER COLUMN xact SET DEFAULT pg_current_xact_id();  -- new rows only: no rewrite
CREATE INDEX articles_xact ON articles (xact);

-- Decided, not yet stored: a claim is committed under the window's locks and deleted in the
-- transaction that inserts its article, so a snapshot sees an article either as its claim or as
-- its row. Story candidates are read from both tables. A claim left by a replica that died
-- between the two is taken over when the article is posted again, stops being a candidate after
-- ten minutes (CLAIM_LIFETIME) and is swept when a replica starts.
CREATE TABLE story_claims (
    id           text PRIMARY KEY,
    record       jsonb NOT NULL,
    embedding    vector(384) NOT NULL,
    story_id     text NOT NULL,
    published_at timestamptz,
    created_at   timestamptz NOT NULL,
    xact         xid8 NOT NULL DEFAULT pg_current_xact_id()
);
ALTER TABLE story_claims ALTER COLUMN embedding SET STORAGE PLAIN;

-- Take the ingest locks of an article's story window, then answer whether the window is as the
-- caller's snapshot `seen` left it: TRUE when no article or claim `seen` missed is published in
-- [low, high] (undated: created then) within cosine distance `reach` of `probe` (NULL reach: at
-- any distance). Called from the INSERT that records the claim, so the check and the claim run
-- under the locks in one statement, and the commit that ends it releases them.
-- VOLATILE: the query after the locks takes a new snapshot, so it sees what the previous holder
-- committed. Custom plans: `xact >= <the snapshot's xmin>` then reads only the newest rows
-- through articles_xact (a generic plan cannot tell how selective that bound is).
CREATE FUNCTION ingest_window_unchanged(
    namespace integer, keys integer[], seen pg_snapshot,
    low timestamptz, high timestamptz, probe vector, reach double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    key integer;
BEGIN
    FOREACH key IN ARRAY keys LOOP  -- the caller sorts them: no two transactions wait in a cycle
        PERFORM pg_advisory_xact_lock(namespace, key);
    END LOOP;
    RETURN NOT EXISTS (
        SELECT FROM articles
        WHERE xact >= pg_snapshot_xmin(seen) AND NOT pg_visible_in_snapshot(xact, seen)
          AND (published_at BETWEEN low AND high OR (published_at IS NULL AND created_at BETWEEN low AND high))
          AND (reach IS NULL OR embedding <=> probe <= reach)
    ) AND NOT EXISTS (
        SELECT FROM story_claims
        WHERE NOT pg_visible_in_snapshot(xact, seen)
          AND (published_at BETWEEN low AND high OR (published_at IS NULL AND created_at BETWEEN low AND high))
          AND (reach IS NULL OR embedding <=> probe <= reach)
    );
END
$$;
