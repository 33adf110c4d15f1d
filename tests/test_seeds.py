import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from model.articles.article import article_from_record
from model.articles.seeds import read_seeds
from model.articles.urls import article_id
from model.errors import InvalidArticleError, SeedFormatError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "seeds" / "000_80b44f21389d41d0.txt"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_seed_parses_every_field():
    corpus = read_seeds([SAMPLE])
    assert len(corpus.main_ids) == 1
    main = corpus.main_articles[0]
    assert main.title == "Amazon Suspends Police Use of Its Facial Recognition"
    assert main.excerpt.startswith("Amazon did not respond")
    assert main.published_at == datetime(2021, 8, 28, 0, 1, tzinfo=UTC)
    assert set(main.urls) == {"webUrl", "originalUrl", "ampWebUrl", "cdnAmpWebUrl"}
    assert main.canonical_url == "courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition"
    assert main.provider is not None
    assert main.provider.name == "Courthouse News Service"
    assert main.provider_key == "courthousenews.com"
    assert main.topics == ("AWS AI", "AI", "Computer Vision")
    assert main.quality == 41
    assert main.heat is None  # -1 is the feed's "not measured" marker
    assert main.published is False
    assert main.category == "news"
    assert main.type == "article"
    assert "secured" in main.extra
    # Related coverage: three other outlets, each an article of its own, linked to the main one.
    assert len(corpus.articles) == 4
    assert len(main.related_ids) == 3
    assert corpus.links == [(main.id, other) for other in main.related_ids]
    zdnet = corpus.articles[main.related_ids[0]]
    assert zdnet.provider_key == "zdnet.com"
    assert zdnet.quality == 72
    assert zdnet.images[0].width == 770
    assert zdnet.images[0].is_cached is True
    assert zdnet.published_at == datetime(2021, 8, 28, 10, 39, tzinfo=UTC)


def test_id_comes_from_the_canonical_url():
    main = read_seeds([SAMPLE]).main_articles[0]
    assert main.id == article_id(
        "https://courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition"
    )


def test_dates_with_and_without_zone_and_as_strings():
    assert article_from_record(
        {"title": "t", "publishedDateTime": "2021-08-28T02:01:00+02:00"}
    ).published_at == (datetime(2021, 8, 28, 0, 1, tzinfo=UTC))
    naive = article_from_record({"title": "t", "publishedDateTime": "2021-08-28 00:01"})
    assert naive.published_at == datetime(2021, 8, 28, 0, 1, tzinfo=UTC)
    assert (
        article_from_record({"title": "t", "publishedDateTime": datetime(2021, 8, 28)}).published_at.tzinfo
        == UTC
    )


def test_missing_fields_are_normal():
    article = article_from_record({"title": "Only a title"})
    assert article.excerpt == ""
    assert article.provider is None
    assert article.topics == ()
    assert article.quality is None
    assert article.url is None
    assert article.text == "Only a title"


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({"title": 42.5, "excerpt": ["x"]}, "excerpt", "expected a string"),
        ({"excerpt": ""}, "title", "needs a title or an excerpt"),
        ({"title": "t", "quality": 140}, "quality", "from 0 to 100"),
        ({"title": "t", "quality": "high"}, "quality", "expected a number"),
        ({"title": "t", "topics": [None]}, "topics[0]", "non-empty string"),
        ({"title": "t", "publishedDateTime": "last tuesday"}, "publishedDateTime", "ISO 8601"),
        ({"title": "t", "webUrl": "www.example.com/x"}, "webUrl", "absolute http(s) URL"),
        ({"title": "t", "published": "yes"}, "published", "true or false"),
        ({"title": "t", "provider": ["x"]}, "provider", "mapping"),
        ({"title": "t", "publishedDateTime": 99999999999999}, "publishedDateTime", "epoch seconds"),
        ({"title": "t", "publishedDateTime": "0001-01-01T00:00:00+01:00"}, "publishedDateTime", "years 1"),
        ({"title": "t", "webUrl": "http://a.com:abc/"}, "webUrl", "absolute http(s) URL"),
        ({"title": "t", "excerpt": "x" * 20_001}, "excerpt", "at most 20,000 characters"),
        ({"title": "bad \ud800"}, "title", "unpaired surrogate"),
    ],
)
def test_bad_fields_name_the_field_and_the_expectation(record, field, words):
    with pytest.raises(InvalidArticleError) as caught:
        article_from_record(record)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_broken_file_names_file_and_field(tmp_path):
    bad = write(tmp_path, "bad.md", "---\ntitle: ok\nquality: lots\n---\n")
    with pytest.raises(SeedFormatError) as caught:
        read_seeds([bad])
    assert caught.value.path == str(bad)
    assert caught.value.field == "quality"
    assert str(bad) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("title: no markers\n", "front matter"),
        ("---\ntitle: never closed\n", "front matter"),
        ("---\ntitle: [unclosed\n---\n", "yaml"),
        ("", "front matter"),
        ("---\n- a list\n---\n", "article"),
        ("---\ntitle: t\nrelated:\n  - title: 5\n    excerpt: [1]\n---\n", "related[0].excerpt"),
    ],
)
def test_malformed_files_raise_seed_format_errors(tmp_path, text, field):
    path = write(tmp_path, "x.md", text)
    with pytest.raises(SeedFormatError) as caught:
        read_seeds([path])
    assert caught.value.field == field


def test_skip_invalid_reports_and_goes_on(tmp_path):
    write(tmp_path, "a.md", "---\ntitle: Good one\n---\n")
    write(tmp_path, "b.md", "---\ntitle: [bad\n---\n")
    write(tmp_path, "c.jsonl", '{"title": "line one"}\nnot json\n{"title": "line three"}\n')
    corpus = read_seeds([tmp_path], skip_invalid=True)
    assert sorted(a.title for a in corpus.articles.values()) == ["Good one", "line one", "line three"]
    assert len(corpus.errors) == 2
    assert {e.field for e in corpus.errors} == {"yaml", "json"}
    jsonl_error = next(e for e in corpus.errors if e.field == "json")
    assert jsonl_error.line == 2


def test_folders_are_read_recursively_with_all_suffixes(tmp_path):
    write(tmp_path, "a.md", "---\ntitle: A\n---\nbody")
    write(tmp_path, "sub/b.txt", "---\ntitle: B\n---\n")
    write(tmp_path, "sub/deeper/c.yaml", "title: C\n")
    write(tmp_path, "d.jsonl", json.dumps({"title": "D"}) + "\n")
    write(tmp_path, "README.md", "# not a seed\n")
    write(tmp_path, "notes.csv", "ignored")
    corpus = read_seeds([tmp_path])
    assert sorted(a.title for a in corpus.articles.values()) == ["A", "B", "C", "D"]


def test_the_same_article_seen_twice_is_merged(tmp_path):
    url = "https://www.example.com/news/1"
    write(tmp_path, "a.md", f"---\ntitle: Story\nwebUrl: {url}\ntopics: [AI]\n---\n")
    write(
        tmp_path,
        "b.md",
        f"---\ntitle: Story\nwebUrl: {url}/amp\nexcerpt: Longer text\ntopics: [Robotics]\nquality: 50\n---\n",
    )
    corpus = read_seeds([tmp_path])
    assert len(corpus.articles) == 1
    merged = next(iter(corpus.articles.values()))
    assert merged.topics == ("AI", "Robotics")
    assert merged.excerpt == "Longer text"
    assert merged.quality == 50


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(SeedFormatError, match="no such file"):
        read_seeds([tmp_path / "nope"])


def test_record_round_trip():
    main = read_seeds([SAMPLE]).main_articles[0]
    again = article_from_record(main.to_record())
    assert again.id == main.id
    assert again.topics == main.topics
    assert again.published_at == main.published_at


def test_skip_invalid_goes_on_past_every_kind_of_bad_field(tmp_path):
    bad = {
        "date.md": "---\ntitle: t\npublishedDateTime: 99999999999999\n---\n",
        "old.md": "---\ntitle: t\npublishedDateTime: 0001-01-01T00:00:00+01:00\n---\n",
        "long.md": "---\ntitle: t\nexcerpt: " + "x" * 20_001 + "\n---\n",
        "port.md": "---\ntitle: t\nwebUrl: http://a.com:99999/\n---\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "good.md").write_text("---\ntitle: A good one\n---\n")
    corpus = read_seeds([tmp_path], skip_invalid=True)
    assert len(corpus.articles) == 1 and len(corpus.errors) == len(bad)
    with pytest.raises(SeedFormatError, match=r"date\.md: publishedDateTime"):
        read_seeds([tmp_path / "date.md"])
