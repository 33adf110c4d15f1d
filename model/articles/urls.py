"""Canonical URLs and stable article ids.

The same story reaches us as ``webUrl``, ``ampWebUrl``, a Google AMP cache URL and copies with
tracking parameters. They all reduce to one canonical form, and the article id is a hash of it,
so a re-post under any variant lands on the same id.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

# Query parameters that only track the click, never select content.
_TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "ref",
        "ref_src",
        "ref_url",
        "referrer",
        "cmpid",
        "ocid",
        "icid",
        "ito",
        "smid",
        "_ga",
        "_gl",
        "ncid",
        "sr_share",
        "soc_src",
        "soc_trk",
        "outputtype",
        "amp",
        "amp_js_v",
        "usqp",
        "__twitter_impression",
        "s_cid",
        "xtor",
        "spm",
        "guccounter",
        "guce_referrer",
        "guce_referrer_sig",
    }
)
_TRACKING_PREFIXES = ("utm_", "at_", "pk_", "mtm_", "hsa_", "oly_", "vero_", "__s")
# cdn.ampproject.org paths: /c/ (document), /v/ (viewer), /i/ (image); an "s/" segment means https.
_AMP_CACHE_PATH = re.compile(r"^/(?:c|v|i|wp)/(?:s/)?(?P<rest>.+)$")
_AMP_SUFFIX = re.compile(r"(?:/amp|\.amp|/amp\.html|\.amp\.html)$", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def canonical_url(url: str) -> str | None:
    """Return the canonical form of ``url`` (no scheme, no ``www.``, no AMP, no tracking).

    Returns ``None`` when ``url`` is not an absolute http(s) URL.

    >>> canonical_url("https://www-example-com.cdn.ampproject.org/c/s/www.example.com/a/b/amp/?utm_source=x")
    'example.com/a/b'
    """
    url = url.strip()
    if "://" not in url:
        if url.startswith("//"):
            url = "https:" + url
        else:
            return None
    try:
        # urlsplit and .port raise ValueError on a malformed authority ("a.com:abc", "[::1").
        parts = urlsplit(url)
        port_number = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    path = parts.path or "/"
    query = parts.query
    if host.endswith(".cdn.ampproject.org"):
        match = _AMP_CACHE_PATH.match(path)
        if match:
            try:
                inner = urlsplit("https://" + match.group("rest"))
            except ValueError:
                return None
            host = (inner.hostname or host).lower()
            path = inner.path or "/"
            query = inner.query or query
    if host.startswith("www."):
        host = host[4:]
    if host.startswith("amp."):
        host = host[4:]
    path = re.sub(r"/{2,}", "/", path)
    if path.lower().startswith("/amp/"):
        path = path[4:]
    path = path.rstrip("/")
    path = _AMP_SUFFIX.sub("", path)
    kept = [
        (key, value)
        for key, value in parse_qsl(query, keep_blank_values=True)
        if key.lower() not in _TRACKING_PARAMS and not key.lower().startswith(_TRACKING_PREFIXES)
    ]
    port = f":{port_number}" if port_number and port_number not in (80, 443) else ""
    canonical = f"{host}{port}{path}"
    if kept:
        canonical += "?" + urlencode(sorted(kept))
    return canonical


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def article_id(
    url: str | None,
    *,
    provider: str | None = None,
    title: str | None = None,
    published_at: datetime | None = None,
    excerpt: str | None = None,
) -> str:
    """A stable 16-hex-digit id: from the canonical URL, else from provider + title + date.

    Without a URL, the start of the excerpt joins the key too: corpora without dates or
    providers reuse headlines for different stories, and merging those would lose one.

    The fallback normalises case and spaces in the title and keeps the timestamp to the minute:
    wire services re-use headlines for recurring reports on the same day ("FED WEEKLY REPORT"),
    which are different articles.
    """
    canonical = canonical_url(url) if url else None
    if canonical:
        return _digest("url:" + canonical)
    norm_title = _SPACES.sub(" ", (title or "").strip().lower())
    day = published_at.strftime("%Y-%m-%dT%H:%M") if published_at else ""
    norm_provider = (provider or "").strip().lower()
    lead = _SPACES.sub(" ", (excerpt or "").strip().lower())[:200]
    return _digest(f"text:{norm_provider}|{norm_title}|{day}|{lead}")
