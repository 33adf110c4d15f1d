from datetime import UTC, datetime

import pytest

from model.articles.urls import article_id, canonical_url

SAMPLE = "courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition"


@pytest.mark.parametrize(
    "url",
    [
        "https://www.courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition/",
        "http://courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition",
        "https://www.courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition/amp/",
        "https://www-courthousenews-com.cdn.ampproject.org/c/s/www.courthousenews.com/"
        "amazon-suspends-police-use-of-its-facial-recognition/amp/",
        "https://WWW.CourthouseNews.com/amazon-suspends-police-use-of-its-facial-recognition/"
        "?utm_source=twitter&utm_medium=social&fbclid=abc#comments",
        "https://amp.courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition?amp=1",
    ],
)
def test_url_variants_share_one_canonical_form(url):
    assert canonical_url(url) == SAMPLE


def test_content_query_parameters_are_kept_and_sorted():
    assert canonical_url("https://example.com/view?b=2&id=7&utm_campaign=x") == "example.com/view?b=2&id=7"


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/x", "mailto:a@b.c", ""])
def test_non_http_urls_have_no_canonical_form(url):
    assert canonical_url(url) is None


def test_id_is_the_same_for_every_url_variant():
    a = article_id("https://www.example.com/story/1/amp")
    b = article_id("https://www-example-com.cdn.ampproject.org/c/s/www.example.com/story/1?utm_source=x")
    assert a == b
    assert len(a) == 16
    assert a != article_id("https://www.example.com/story/2")


def test_fallback_id_from_provider_title_and_time_ignores_case_and_spaces():
    when = datetime(2021, 8, 28, 0, 1, tzinfo=UTC)
    a = article_id(None, provider="Reuters", title="Fed  raises RATES", published_at=when)
    b = article_id(None, provider="reuters", title="fed raises rates ", published_at=when)
    assert a == b
    later = datetime(2021, 8, 29, 0, 1, tzinfo=UTC)
    assert article_id(None, provider="reuters", title="fed raises rates", published_at=later) != a


def test_fallback_id_separates_reused_headlines_with_different_text():
    a = article_id(None, title="Market report", excerpt="Stocks rose.")
    b = article_id(None, title="Market report", excerpt="Stocks fell.")
    assert a != b
