"""The editors' workspace pages: Tag, Inbox, Story, Review queue and Correct (one article).

Server-rendered Jinja2 (`service/templates/`), a little vanilla JavaScript for keyboard shortcuts
(`service/static/app.js`), every asset served by this router: nothing from a CDN, so the pages
work offline. Each view renders a `service.workspace` use case and links its JSON twin under
``/v1`` (Datasette's rule: the page and the API cannot drift apart). Forms post plain
``application/x-www-form-urlencoded`` bodies and redirect (post/redirect/get), so a reload never
re-submits and every saved answer is visible at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, time
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import ValidationError

from model.articles.article import Article, article_from_record
from model.articles.language import is_rtl, normalise_language
from model.articles.seeds import split_seed_record
from model.coverage.search import ArticleSearch
from model.errors import ArticleNotFoundError, InvalidArticleError, NewsDeskError
from model.news_model import NewsModel
from model.results import Classification, SimilarHit
from model.store import ArticleQuery
from service import workspace
from service.auth import KEY_COOKIE
from service.deps import ArticleId, EditorDep, IngestDep, ReaderDep, StateDep
from service.errors import BadRequestError, describe_validation_error, status_for
from service.inference import classify
from service.ingest import ingest_articles
from service.workspace_schemas import CorrectionIn, PairFeedbackIn

router = APIRouter(tags=["pages"], include_in_schema=False)

HERE = FilePath(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = HERE / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
COVERAGE_K = 10
TOPIC_BARS = 8


def _fmt_time(value: Any) -> str:
    """``2024-03-05 10:00`` (UTC) from an ISO string or datetime; empty when unknown."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _text_attributes(language: str | None) -> Markup:
    """``lang`` and ``dir`` for an element holding an article's text: right-to-left languages
    (Arabic, Hebrew, Persian, Urdu, ...) display as such; an unknown one lets the browser decide."""
    if not language:
        return Markup(' dir="auto"')
    direction = "rtl" if is_rtl(language) else "ltr"
    return Markup(' lang="{}" dir="{}"').format(language, direction)


templates.env.filters["when"] = _fmt_time
templates.env.filters["textdir"] = _text_attributes
templates.env.filters["pct"] = lambda value: f"{100 * float(value):.0f}%"


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _error_page(request: Request, error: Exception, title: str = "Something went wrong") -> HTMLResponse:
    status = status_for(error)
    if isinstance(error, ArticleNotFoundError):
        title = "No such article"
    elif status == 503:
        title = "Not ready"
    return _page(request, "error.html", status_code=status, title=title, message=str(error), status=status)


# --- signing in (pages only; the JSON API takes the key as a bearer token) ------------------


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never send the browser elsewhere after signing in.
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, "login.html", view="login", next=_safe_next(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login_submit(request: Request, state: StateDep) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    principal = state.keyring.identify(form.get("key", "")) if state.keyring.entries else None
    if principal is None:
        return _page(request, "login.html", 401, view="login", next=target, error="Unknown API key.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        form["key"],
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(KEY_COOKIE)
    return response


# --- assets --------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(css|js|svg|png)$")]) -> Response:
    path = STATIC / name
    if not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "max-age=300"})


@router.get("/favicon.ico")
async def favicon() -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


# --- Tag -----------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _record_from_form(form: dict[str, str]) -> dict[str, Any]:
    if form.get("seed", "").strip():
        return workspace.parse_record_text(form["seed"])
    record: dict[str, Any] = {}
    names = (("title", "title"), ("excerpt", "excerpt"), ("webUrl", "url"), ("publishedDateTime", "date"))
    for field, key in names:
        if form.get(key, "").strip():
            record[field] = form[key].strip()
    if form.get("outlet", "").strip():
        outlet = form["outlet"].strip()
        record["provider"] = {"name": outlet, "domain": outlet.lower()} if "." in outlet else {"name": outlet}
    article_from_record(record)  # the article rules; the error names the field
    return record


def _topic_bars(classification: Classification, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """Chosen labels first, then the next most probable, each with its threshold."""
    chosen = {t.label for t in classification.topics}
    pool = classification.all_topics or classification.candidates or classification.topics
    bars = [t for t in pool if t.label in chosen] + [t for t in pool if t.label not in chosen]
    return [
        {
            "label": t.label,
            "probability": t.probability,
            "threshold": thresholds.get(t.label, 0.5),
            "chosen": t.label in chosen,
        }
        for t in bars[: max(TOPIC_BARS, len(chosen))]
    ]


def _outlet(article: Article) -> str:
    if article.provider is None:
        return ""
    return article.provider.name or article.provider.domain or ""


def _hits(search: ArticleSearch, hits: list[SimilarHit]) -> list[dict[str, Any]]:
    """Each hit with its article, read through the search that found it (the database's too)."""
    out = []
    for hit in hits:
        known = search.known(hit.article_id)
        if known is None:
            continue
        article: Article = known.article
        out.append(
            {
                "id": hit.article_id,
                "verdict": hit.verdict,
                "score": hit.score,
                "title": article.title or article.excerpt[:120],
                "outlet": _outlet(article),
                "language": article.language,
                "published": article.published_at,
                "url": article.url,
                "story_id": hit.story_id,
            }
        )
    return out


async def _analyse(state: Any, record: dict[str, Any]) -> dict[str, Any]:
    model = state.require_model()
    search = state.search_for(model)  # the search path of /v1/similar
    main, related = split_seed_record(record)
    [result], _ = await classify(state, model, [main], all_scores=True)

    def related_coverage() -> list[dict[str, Any]]:
        return _hits(search, model.similar(main, COVERAGE_K, search=search))

    coverage = await asyncio.to_thread(related_coverage)
    joins = next((h for h in coverage if h["verdict"] in ("duplicate", "same_story")), None)
    stored = await asyncio.to_thread(state.store.get, main.id) if state.store is not None else None
    return {
        "article": main,
        "topics": _topic_bars(result, model.thresholds),
        "chosen": [t.label for t in result.topics],
        "scores": result.scores,
        "coverage": coverage,
        "joins": joins,
        "related": related,
        "stored": stored is not None,
        "model_version": model.version,
    }


@router.get("/", response_class=HTMLResponse)
async def tag_page(request: Request, _: ReaderDep) -> HTMLResponse:
    return _page(request, "tag.html", view="tag", form={}, result=None, error=None)


@router.post("/tag", response_class=HTMLResponse)
async def tag_submit(request: Request, state: StateDep, _: ReaderDep) -> Response:
    form = await _form(request)
    try:
        record = _record_from_form(form)
        result = await _analyse(state, record)
    except InvalidArticleError as error:
        return _page(request, "tag.html", 422, view="tag", form=form, result=None, error=str(error))
    except NewsDeskError as error:
        return _error_page(request, error)
    return _page(request, "tag.html", view="tag", form=form, result=result, error=None)


@router.post("/ingest", response_class=HTMLResponse)
async def ingest_submit(request: Request, state: StateDep, _: IngestDep) -> Response:
    form = await _form(request)
    try:
        record = _record_from_form(form)
        main, related = split_seed_record(record)
        model, store = state.require_model(), state.require_store()
        await ingest_articles(state, model, store, [main, *related])
    except InvalidArticleError as error:
        return _page(request, "tag.html", 422, view="tag", form=form, result=None, error=str(error))
    except NewsDeskError as error:
        return _error_page(request, error)
    return RedirectResponse(f"/article/{main.id}?ingested=1", status_code=303)


# --- Inbox ---------------------------------------------------------------------------------


def _day(value: str, field: str, *, end: bool) -> datetime | None:
    if not value.strip():
        return None
    try:
        day = date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise BadRequestError(f"{field}: expected a date like 2024-03-05, got {value!r:.40}") from None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_page(request: Request, state: StateDep, _: ReaderDep) -> HTMLResponse:
    params = {key: value for key, value in request.query_params.items() if value.strip()}
    filters = {
        k: params.get(k, "") for k in ("q", "topic", "provider", "language", "story_id", "since", "until")
    }
    twin = "/v1/articles?" + urlencode({k: v for k, v in params.items() if k in (*filters, "cursor")})
    labels = state.model.labels if state.model is not None else []
    try:
        store = state.require_store()
        query = ArticleQuery(
            topic=filters["topic"] or None,
            provider=filters["provider"] or None,
            story_id=filters["story_id"] or None,
            since=_day(filters["since"], "since", end=False),
            until=_day(filters["until"], "until", end=True),
            q=filters["q"] or None,
            language=normalise_language(filters["language"]),
        )
        page = await asyncio.to_thread(workspace.list_articles, store, query, 50, params.get("cursor"))
    except NewsDeskError as error:
        return _page(
            request, "inbox.html", status_for(error), view="inbox", page=None, filters=filters,
            labels=labels, error=str(error), twin=twin, next_url=None, filtered=True,
        )  # fmt: skip
    next_url = None
    if page.next_cursor:
        kept = {k: v for k, v in filters.items() if v}
        next_url = "/inbox?" + urlencode({**kept, "cursor": page.next_cursor})
    return _page(
        request, "inbox.html", view="inbox", page=page, filters=filters, labels=labels, error=None,
        twin=twin, next_url=next_url, filtered=any(filters.values()) or "cursor" in params,
    )  # fmt: skip


# --- Story ---------------------------------------------------------------------------------


@router.get("/story/{story_id}", response_class=HTMLResponse)
async def story_page(
    request: Request, state: StateDep, _: ReaderDep, story_id: Annotated[str, Path(max_length=200)]
) -> HTMLResponse:
    rows: list[dict[str, Any]] = []
    asked = story_id  # a merged story's id shows the story it was merged into, and says so
    story_id, merged_from = await asyncio.to_thread(workspace.story_identity, state.store, story_id)
    if state.store is not None:
        for stored in await asyncio.to_thread(state.store.by_story, story_id):
            article = article_from_record(stored.record)
            rows.append({"article": article, "labels": stored.effective_labels, "stored": True})
    seen = {row["article"].id for row in rows}
    model = state.model
    if model is not None:
        for article_id in model.story_members(story_id):
            if article_id not in seen:
                article = model.get(article_id)
                rows.append({"article": article, "labels": list(article.topics), "stored": False})
    if not rows:
        return _page(
            request, "error.html", 404, title="No such story", status=404,
            message=f"No known article belongs to story {story_id!r}.",
        )  # fmt: skip
    rows.sort(key=lambda r: (r["article"].published_at is None, r["article"].published_at or datetime.min))
    outlets = Counter(_outlet(r["article"]) or "unknown outlet" for r in rows)
    topics = Counter(label for r in rows for label in r["labels"])
    first = rows[0] if rows[0]["article"].published_at else None
    return _page(
        request, "story.html", view="story", story_id=story_id, rows=rows, outlets=outlets.most_common(),
        topics=topics.most_common(), first=first, total=len(rows), asked=asked, merged_from=merged_from,
    )  # fmt: skip


# --- Review --------------------------------------------------------------------------------


@router.get("/review", response_class=HTMLResponse)
async def review_page(request: Request, state: StateDep, _: ReaderDep) -> HTMLResponse:
    try:
        store = state.require_store()
        queue = await asyncio.to_thread(workspace.review_queue, store, state.model, 30)
    except NewsDeskError as error:
        return _error_page(request, error)
    return _page(request, "review.html", view="review", queue=queue)


# --- Correct (one article) -----------------------------------------------------------------


def _coverage_of(model: NewsModel, search: ArticleSearch, article_id: str) -> list[dict[str, Any]]:
    """Related coverage of a known article, searched as `/v1/similar` searches; none if unknown."""
    if search.known(article_id) is None:
        return []
    return _hits(search, model.similar(article_id, COVERAGE_K, search=search))


@router.get("/article/{article_id}", response_class=HTMLResponse)
async def article_page(
    request: Request, state: StateDep, _: ReaderDep, article_id: ArticleId
) -> HTMLResponse:
    try:
        store = state.require_store()
        stored = await asyncio.to_thread(workspace.require_stored, store, article_id)
        detail = await asyncio.to_thread(workspace.stored_detail, store, stored)
    except NewsDeskError as error:
        return _error_page(request, error)
    model = state.model
    coverage: list[dict[str, Any]] = []
    labels: list[str] = []
    thresholds: dict[str, float] = {}
    if model is not None:
        labels, thresholds = model.labels, model.thresholds
        coverage = await asyncio.to_thread(_coverage_of, model, state.search_for(model), article_id)
    graded = {f.other: f for f in detail.pair_feedback}
    related = await asyncio.to_thread(store.get_many, detail.related_ids)
    classification = Classification.from_record(stored.classification, stored.id)
    offered = [*detail.effective.labels, *stored.model_labels, *(t.label for t in detail.candidates)]
    offered = list(dict.fromkeys(offered))
    return _page(
        request, "article.html", view="article", d=detail, article=article_from_record(stored.record),
        topic_bars=_topic_bars(classification, thresholds), offered=offered, labels=labels, coverage=coverage,
        graded=graded, related=[related[i] for i in detail.related_ids if i in related],
        flash=request.query_params.get("saved") or (request.query_params.get("ingested") and "ingested"),
        form_error=request.query_params.get("error"),
    )  # fmt: skip


@router.post("/article/{article_id}/correct")
async def correct_submit(
    request: Request,
    state: StateDep,
    principal: EditorDep,
    article_id: ArticleId,
) -> Response:
    form = await _form(request)
    raw = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    try:
        store = state.require_store()
        stored = await asyncio.to_thread(workspace.require_stored, store, article_id)
        chosen = [label for label in raw.get("topic", []) if label.strip()]
        chosen += [label.strip() for label in form.get("new_topics", "").split(",") if label.strip()]
        topics = list(dict.fromkeys(chosen))
        body: dict[str, Any] = {"editor": form.get("editor") or None, "note": form.get("note") or None}
        if topics != stored.effective_labels:
            body["topics"] = topics
        if form.get("quality", "").strip():
            body["quality"] = form["quality"].strip()
        if "topics" not in body and "quality" not in body and not body["note"]:
            return RedirectResponse(f"/article/{article_id}?saved=unchanged", status_code=303)
        correction = CorrectionIn.model_validate(body)
        await asyncio.to_thread(workspace.add_correction, store, article_id, correction, principal)
    except ValidationError as error:
        message = "; ".join(describe_validation_error(dict(e)) for e in error.errors())
        return RedirectResponse(f"/article/{article_id}?" + urlencode({"error": message}), status_code=303)
    except NewsDeskError as error:
        return _error_page(request, error)
    return RedirectResponse(f"/article/{article_id}?saved=1", status_code=303)


@router.post("/article/{article_id}/pair")
async def pair_submit(
    request: Request,
    state: StateDep,
    principal: EditorDep,
    article_id: ArticleId,
) -> Response:
    form = await _form(request)
    try:
        body = PairFeedbackIn.model_validate(
            {"a": article_id, "b": form.get("other", ""), "verdict": form.get("verdict", ""),
             "editor": form.get("editor") or None}
        )  # fmt: skip
        store = state.require_store()
        await asyncio.to_thread(workspace.add_pair_feedback, store, state.model, body, principal)
    except ValidationError as error:
        message = "; ".join(describe_validation_error(dict(e)) for e in error.errors())
        return RedirectResponse(f"/article/{article_id}?" + urlencode({"error": message}), status_code=303)
    except NewsDeskError as error:
        return _error_page(request, error)
    return RedirectResponse(f"/article/{article_id}?saved=pair#coverage", status_code=303)
