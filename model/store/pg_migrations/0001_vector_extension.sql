-- pgvector. Needs a superuser (pgvector is not a trusted extension): on a managed server an
-- administrator runs this once per database and the migration is then a no-op.
CREATE EXTENSION IF NOT EXISTS vector;
