-- Keep each vector in its row. With pgvector's default storage a row just over 2 kB (a 1.5 kB
-- vector and a short record) moves the vector out of line (TOAST), and every exact scan then pays
-- a second lookup per row: a filtered search over 41k of 1M rows took 407 ms that way, 154 ms
-- with the vector in the row (benchmarks/backends.py before and after; the record is compressed
-- or moved out instead). Applies to rows written from now on; VACUUM FULL articles rewrites older ones.
ALTER TABLE articles ALTER COLUMN embedding SET STORAGE PLAIN;
