"""Each article's language: the seed's own or detected, stored (and filled in for older rows) on both
backends, filtered in the index, the store and the API, and shown right to left where it is."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import ready_client, shared_embedder

from model.articles.article import article_from_record
from model.articles.language import detect_language, is_rtl, normalise_language
from model.articles.seeds import read_seeds
from model.coverage.article_index import ArticleIndex
from model.errors import InvalidArticleError, SeedFormatError
from model.results import SearchFilters
from model.store import ArticleQuery
from model.store.base import StoredArticle
from service.config import Settings
from service.main import create_app

GERMAN = "Die Bundesregierung beschließt neue Regeln für den Ausbau der Windkraft an Land"
ARABIC = "الحكومة تعلن عن خطة جديدة لدعم الطاقة المتجددة في البلاد"
ENGLISH = "The government announces a new plan to support renewable energy across the country"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_codes_are_normalised_and_a_bad_one_names_the_field():
    assert normalise_language("DE") == "de"
    assert normalise_language(" pt-BR ") == "pt"
    assert normalise_language("zh_Hant") == "zh"
    assert normalise_language(None) is None and normalise_language("") is None
    for bad in ("english!", "e", "deutsch", 12, ["de"]):
        with pytest.raises(InvalidArticleError) as caught:
            normalise_language(bad)
        assert caught.value.field == "language" and "expected a language code" in caught.value.reason


def test_text_is_detected_and_text_without_letters_is_not():
    assert detect_language(GERMAN) == "de"
    assert detect_language(ARABIC) == "ar"
    assert detect_language(ENGLISH) == "en"
    assert detect_language("") is None and detect_language("2024 — 3:1 !!") is None
    assert is_rtl("ar") and is_rtl("he") and not is_rtl("de") and not is_rtl(None)


def test_the_seeds_language_wins_over_detection_and_round_trips(tmp_path):
    given = article_from_record({"title": ENGLISH, "language": "FR"})
    assert given.language == "fr" and given.to_record()["language"] == "fr"
    assert article_from_record({"title": GERMAN}).language == "de"
    assert article_from_record(article_from_record({"title": ARABIC}).to_record()).language == "ar"

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"title": GERMAN}) + "\n" + json.dumps({"title": ENGLISH, "language": "es"}) + "\n"
    )
    assert sorted(a.language for a in read_seeds([seeds]).articles.values()) == ["de", "es"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"title": GERMAN}) + "\n" + json.dumps({"title": GERMAN, "language": "german!"}) + "\n"
    )
    with pytest.raises(SeedFormatError, match=r"bad.jsonl:2: language: expected a language code"):
        read_seeds([bad])


def _stored(i: int, text: str, *, language: bool) -> StoredArticle:
    record = article_from_record({"title": f"{text} {i}", "webUrl": f"https://news.example/{i}"}).to_record()
    if not language:
        record.pop("language", None)  # as stored before articles had a language
    vector = np.zeros(384, dtype=np.float32)
    vector[i % 384] = 1.0
    return StoredArticle(
        id=f"a{i}",
        record=record,
        embedding=vector,
        story_id=f"s{i}",
        classification={"topics": []},
        canonical_url=f"https://news.example/{i}",
        published_at=T0 + timedelta(hours=i),
    )


def _sqlite_store_before_languages(path) -> None:
    """A store at schema version 2 (before the language column), with three articles in it."""
    from model.store import sqlite as lite

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executescript(lite._CREATE_V1)
    db.executescript(lite._MIGRATIONS[1])
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    for i, text in enumerate((GERMAN, ARABIC, "12:30")):
        article = _stored(i, text, language=False)
        db.execute(
            "INSERT INTO articles (id, record, embedding, story_id, classification, published_at, "
            "created_at) VALUES (?, ?, ?, ?, '{}', ?, ?)",
            (article.id, json.dumps(article.record), article.embedding.tobytes(), article.story_id,
             article.published_at.isoformat(), T0.isoformat()),
        )  # fmt: skip
    db.commit()
    db.close()


def test_sqlite_fills_in_stored_articles_at_migration_and_filters_by_language(tmp_path):
    from model.store.sqlite import SCHEMA_VERSION, SqliteArticleStore

    path = tmp_path / "articles.sqlite3"
    _sqlite_store_before_languages(path)
    store = SqliteArticleStore(path)
    try:
        version = store._query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
        assert int(version) == SCHEMA_VERSION
        assert {a.id: a.record["language"] for a in store.iter_since()} == {
            "a0": "de",
            "a1": "ar",
            "a2": None,
        }
        store.put_many([_stored(3, ENGLISH, language=True)])
        assert [a.id for a in store.list_articles(ArticleQuery(language="de"), 10)] == ["a0"]
        assert [a.id for a in store.list_articles(ArticleQuery(language="en"), 10)] == ["a3"]
        assert store.list_articles(ArticleQuery(language="fr"), 10) == []
    finally:
        store.close()


def test_postgresql_fills_in_older_rows_and_filters_lists_and_search(pg_url):
    postgres = pytest.importorskip("model.store.postgres", reason="psycopg is not installed")
    store = postgres.PgArticleStore(pg_url)
    try:
        # Rows as stored before the language column: no column value, no key in the record.
        store.put_many([_stored(i, text, language=False) for i, text in enumerate((GERMAN, ARABIC, "12:30"))])
        assert store.fill_languages() == 3
        assert store.fill_languages() == 0  # an undetectable one is marked, not read again
        assert {a.id: a.record["language"] for a in store.iter_since()} == {
            "a0": "de",
            "a1": "ar",
            "a2": None,
        }
        store.put_many([_stored(3, ENGLISH, language=True), _stored(4, GERMAN, language=True)])
        assert [a.id for a in store.list_articles(ArticleQuery(language="de"), 10)] == ["a4", "a0"]
        query = store.get("a0").embedding
        hits = store.search().nearest(query, 5, SearchFilters(language="de"))
        assert sorted(article_id for article_id, _ in hits) == ["a0", "a4"]
        assert store.search().nearest(query, 5, SearchFilters(language="fr")) == []
    finally:
        store.close()


def test_the_index_filters_by_language_and_keeps_it_in_a_snapshot(tmp_path):
    articles = [
        article_from_record({"title": f"{text} {i}", "webUrl": f"https://news.example/{i}"})
        for i, text in enumerate((GERMAN, ARABIC, ENGLISH, GERMAN))
    ]
    vectors = np.eye(4, 384, dtype=np.float32) + 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ArticleIndex()
    index.add(articles, vectors, [f"s{i}" for i in range(4)])
    german = {articles[0].id, articles[3].id}
    assert {i for i, _ in index.nearest(vectors[1], 4, SearchFilters(language="de"))} == german
    assert index.nearest(vectors[1], 4, SearchFilters(language="fr")) == []
    index.write_snapshot(tmp_path / "snap", from_row=0, meta={})
    restored = ArticleIndex()
    restored.load_snapshot(tmp_path / "snap")
    assert {i for i, _ in restored.nearest(vectors[1], 4, SearchFilters(language="de"))} == german
    assert [i for i, _ in restored.nearest(vectors[0], 4, SearchFilters(language="ar"))] == [articles[1].id]


@pytest.fixture(scope="module")
def client(small_bundle, tmp_path_factory):
    settings = Settings(bundle=small_bundle, data_dir=tmp_path_factory.mktemp("language") / "store")
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


def test_the_api_stores_filters_and_the_pages_show_right_to_left(client):
    ids = {}
    for name, text, extra in (
        ("ar", ARABIC, {}),
        ("de", GERMAN, {}),
        ("es", ENGLISH, {"language": "es-MX"}),  # the client's own language wins
    ):
        body = {"title": text, "webUrl": f"https://news.example/{name}", **extra}
        response = client.post("/v1/articles", json=body)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    for name, article_id in ids.items():
        assert client.get(f"/v1/articles/{article_id}").json()["article"]["language"] == name

    listed = client.get("/v1/articles", params={"language": "AR"}).json()["items"]
    assert [(row["id"], row["language"]) for row in listed] == [(ids["ar"], "ar")]
    bad_filter = client.get("/v1/articles", params={"language": "not a code"})
    assert (
        bad_filter.status_code == 422 and "language: expected a language code" in bad_filter.json()["detail"]
    )
    assert len(client.get("/v1/articles", params={"language": ""}).json()["items"]) == 3

    query = {"article": {"title": GERMAN}, "k": 10}
    hits = client.post("/v1/similar", json={**query, "language": "de"}).json()["hits"]
    assert {hit["id"] for hit in hits} <= {ids["de"]} and all(hit["language"] == "de" for hit in hits)
    assert client.post("/v1/similar", json={**query, "language": "fr"}).json()["hits"] == []
    bad = client.post("/v1/similar", json={**query, "language": "?"})
    assert bad.status_code == 422 and "language" in bad.json()["detail"]

    refused = client.post("/v1/articles", json={"title": GERMAN, "language": "german!"})
    assert refused.status_code == 422 and "language: expected a language code" in refused.json()["detail"]

    page = client.get(f"/article/{ids['ar']}").text
    assert 'lang="ar" dir="rtl"' in page and ARABIC in page
    assert 'lang="de" dir="ltr"' in client.get(f"/article/{ids['de']}").text
    inbox = client.get("/inbox", params={"language": "ar"}).text
    assert 'lang="ar" dir="rtl"' in inbox and GERMAN not in inbox


def test_evaluate_reports_pearson_per_language_pair_beside_the_overall_figure(small_bundle, tmp_path):
    from model.articles.seeds import SeedCorpus
    from model.news_model import NewsModel
    from training.trainer import evaluate_model

    rows = ["id1\tid2\toverall\ttitle1\ttitle2\texcerpt1\texcerpt2\tlang1\tlang2"]
    texts = {
        "de": (
            "Neue Regeln für die Windkraft",
            "Die Windkraft an Land bekommt neue Regeln",
            "Fußball am Sonntag",
        ),
        "en": ("New rules for onshore wind", "Onshore wind power gets new rules", "Football on Sunday"),
    }
    for lang, (a, b, c) in texts.items():
        for i, (other, overall) in enumerate(((b, 1.0), (c, 4.0), (a, 1.0))):
            rows.append(f"{lang}{i}a\t{lang}{i}b\t{overall}\t{a}\t{other}\t\t\t{lang}\t{lang}")
    # A cross-language pair without language columns is detected instead.
    rows.append(f"x1\tx2\t1.5\t{GERMAN}\t{ENGLISH}\t\t\t\t")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")

    model = NewsModel.load(small_bundle, embedder=shared_embedder())
    metrics = evaluate_model(model, SeedCorpus(), pairs=pairs, progress=False)["pairs"]
    assert {"n", "pearson", "abs_pearson"} <= set(metrics)  # the overall figures stay as they are
    by_language = metrics["pearson_by_language"]
    assert list(by_language) == ["de-de", "en-en", "de-en"]
    assert by_language["de-de"]["n"] == 3 and by_language["de-en"]["n"] == 1
    assert by_language["de-en"]["abs_pearson"] != by_language["de-en"]["abs_pearson"]  # NaN: one pair
    assert 0 <= by_language["en-en"]["abs_pearson"] <= 1
