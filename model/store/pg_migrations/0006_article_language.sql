-- Each article's language (ISO 639-1, lower case): the seed's own, else detected from its title and
-- excerpt (model.articles.language). GET /v1/articles and /v1/similar filter on it. New rows get it
-- at ingest; rows stored before this migration are filled in from their stored record when a
-- writable store opens (PgArticleStore.fill_languages, in batches: resumable, replicas may share it).
ALTER TABLE articles ADD COLUMN language text;
CREATE INDEX articles_language ON articles (language, published_at);
-- The rows still to fill in (all of them once, then only undetectable new ones until the next
-- start marks them): a start finds them without reading the whole table.
CREATE INDEX articles_language_unfilled ON articles (seq) WHERE language IS NULL AND NOT record ? 'language';
