-- Story merges (model.store.merges): where the encoder a vector generation switch made live joins two
-- stories, the merged story -> the story it joined, recorded in the switch's transaction. Rows keep
-- their story id (editors' links stay valid); reads show `surviving`, the end of the merge chain,
-- kept flat on every write so resolving a row's story is one primary-key lookup.
CREATE TABLE story_merges (
    merged_story text PRIMARY KEY,
    into_story   text NOT NULL,
    surviving    text NOT NULL,
    generation   integer NOT NULL,
    merged_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX story_merges_surviving ON story_merges (surviving);
