"""The ``library`` commands (what a reader taught: their papers, pending items and follows),
``feedback``, which records what the email's "More like this" and "Less like this" record, and
``digest for`` (added to the ``digest`` group by ``cli/pipeline.py``), what the reader's teaching makes of
an edition."""

from __future__ import annotations

import json
from collections.abc import Callable

import click
import sqlite_utils
from rich.markup import escape

import newsletter.cli.show as show
from newsletter.cli.app import AppContext, check_output, fail, write_json
from newsletter.cli.show import console
from newsletter.errors import FAILURE, USAGE
from newsletter.fetch import Fetcher
from newsletter.library import DISLIKE, LIKE, forget, pending_items, reader_signals, record_signal
from newsletter.library_import import add_to_library, arxiv_source
from newsletter.library_items import MAX_ITEMS, paper_key, parse_arguments
from newsletter.preferences import Follows
from newsletter.reader_view import reader_edition
from newsletter.subscribers import Subscriber, change_follows, find_subscriber

CHOICES = {"up": LIKE, "down": DISLIKE}


@click.group()
def library() -> None:
    """A reader's library: the papers they keep, like and hid, and the authors and keywords they chose."""


@library.command("add")
@click.argument("email")
@click.argument("items", metavar="ITEM...", nargs=-1, required=True)
@click.pass_obj
def library_add(app: AppContext, email: str, items: tuple[str, ...]) -> None:
    """Add papers to a reader's library. ITEM: an arXiv id or URL (abs, pdf or html, any version), a DOI
    (bare or a doi.org URL), or a file: FILE.bib, FILE.ris, a Zotero FILE.csv export, or FILE.txt with
    one id a line. arXiv papers not stored yet are fetched from the arXiv API; what cannot be found now
    is kept as pending, with the reason."""
    parsed = parse_arguments(items, limit=MAX_ITEMS)
    with app.database(create=False) as db:
        reader = _reader(db, email)
        if not parsed.items:
            show.problems(parsed.problems, parsed.problem_count)
            fail(f"nothing to add to {reader.email}'s library", code=USAGE)
        with Fetcher(app.settings.fetch) as fetcher:
            report = add_to_library(db, reader.id, parsed.items, fetcher, arxiv_source(app.settings.library))
    problems = [*parsed.problems, *report.problems]
    show.problems(problems, parsed.problem_count + len(report.problems))
    show.library_added(reader.email, report)
    if problems:
        raise SystemExit(FAILURE if report.added or report.pending else USAGE)


@library.command("list")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Write the library as JSON on standard output.")
@click.pass_obj
def library_list(app: AppContext, email: str, as_json: bool) -> None:
    """Show a reader's papers (liked, hidden, library), pending items and follows."""
    with app.database(create=False) as db:
        reader = _reader(db, email)
        signals, pending = reader_signals(db, reader.id), pending_items(db, reader.id)
    if as_json:
        click.echo(json.dumps(show.library_json(reader, signals, pending), ensure_ascii=False, indent=2))
    else:
        show.library_listing(reader, signals, pending)


@library.command("remove")
@click.argument("email")
@click.argument("papers", metavar="PAPER...", nargs=-1, required=True)
@click.pass_obj
def library_remove(app: AppContext, email: str, papers: tuple[str, ...]) -> None:
    """Remove papers (or pending items) from a reader's library, likes and hidden papers. PAPER: a paper
    id as `digest build --json` writes it (arxiv:..., doi:..., title:...), an arXiv id or URL, or a DOI."""
    keys = {paper: paper_key(paper) for paper in papers}
    unknown = [paper for paper, key in keys.items() if key is None]
    for paper in unknown:
        show.error(f"'{paper}' is not a paper id (arxiv:..., doi:...), an arXiv id or URL, or a DOI")
    with app.database(create=False) as db:
        reader = _reader(db, email)
        wanted = [key for key in keys.values() if key is not None]
        missing = forget(db, reader.id, wanted) if wanted else []
    for key in missing:
        show.error(f"{key} is not in {reader.email}'s library")
    removed = len(wanted) - len(missing)
    console.print(f"removed {removed} from {escape(reader.email)}'s library")
    if unknown or missing:
        raise SystemExit(FAILURE if removed else USAGE)


@click.command("feedback")
@click.argument("email")
@click.argument("paper")
@click.argument("choice", type=click.Choice(sorted(CHOICES)))
@click.pass_obj
def feedback(app: AppContext, email: str, paper: str, choice: str) -> None:
    """Record what a reader thinks of a paper, as the email's links do: up ("More like this") or down
    ("Less like this"). PAPER: a paper id as `digest build --json` writes it, or an arXiv id. The latest
    choice about a paper wins (the same choice again changes nothing); it counts from the reader's next
    edition."""
    key = paper_key(paper)
    if key is None:
        fail(f"'{paper}' is not a paper id (arxiv:..., doi:...), an arXiv id or URL, or a DOI", code=USAGE)
    with app.database(create=False) as db:
        reader = _reader(db, email)
        recorded = record_signal(db, reader.id, key, CHOICES[choice])
    noted = "" if recorded.changed else " (already noted: nothing changed)"
    console.print(f"{escape(reader.email)}: {'more' if choice == 'up' else 'less'} like {escape(key)}{noted}")


@click.command("for")
@click.argument("edition_id", metavar="EDITION", type=int)
@click.argument("email")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the reader's view as JSON ('-': stdout).",
)
@click.pass_obj
def digest_for(app: AppContext, edition_id: int, email: str, json_path: str | None) -> None:
    """Show EDITION as EMAIL's teaching ranks it: the "For you" papers with why, then every paper, best
    first. Papers by authors the reader follows come first in "For you"; papers with a keyword they
    exclude are never proposed and come last. A reader who taught nothing gets the edition's own order
    and no other "For you" papers."""
    if json_path and json_path != "-":
        check_output(json_path, "--json")
    with app.database(create=False) as db:
        view = reader_edition(db, edition_id, email, limit=app.settings.digest.for_you)
    if json_path:
        write_json(view.to_json(), json_path)
        if json_path != "-":
            console.print(f"wrote {escape(json_path)}")
        return
    show.reader_edition(view)


# --- follows ------------------------------------------------------------------------------------------------


@library.command("follow")
@click.argument("email")
@click.argument("authors", metavar="AUTHOR...", nargs=-1, required=True)
@click.pass_obj
def library_follow(app: AppContext, email: str, authors: tuple[str, ...]) -> None:
    """Always show the reader papers by these authors (names as papers spell them; case, accents and
    punctuation do not matter)."""
    _change(app, email, lambda f: Follows.create([*f.authors, *authors], f.exclude_keywords))


@library.command("unfollow")
@click.argument("email")
@click.argument("authors", metavar="AUTHOR...", nargs=-1, required=True)
@click.pass_obj
def library_unfollow(app: AppContext, email: str, authors: tuple[str, ...]) -> None:
    """Stop following these authors."""
    _change(app, email, lambda f: f.without(authors=authors), ("a followed author", authors, Follows.follows))


@library.command("exclude")
@click.argument("email")
@click.argument("keywords", metavar="KEYWORD...", nargs=-1, required=True)
@click.pass_obj
def library_exclude(app: AppContext, email: str, keywords: tuple[str, ...]) -> None:
    """Never show the reader papers with these keywords in their title or abstract (whole words, any
    case)."""
    _change(app, email, lambda f: Follows.create(f.authors, [*f.exclude_keywords, *keywords]))


@library.command("include")
@click.argument("email")
@click.argument("keywords", metavar="KEYWORD...", nargs=-1, required=True)
@click.pass_obj
def library_include(app: AppContext, email: str, keywords: tuple[str, ...]) -> None:
    """Stop excluding these keywords."""
    _change(
        app,
        email,
        lambda f: f.without(keywords=keywords),
        ("an excluded keyword", keywords, Follows.excludes),
    )


Dropping = tuple[str, tuple[str, ...], Callable[[Follows, str], bool]]


def _change(
    app: AppContext, email: str, change: Callable[[Follows], Follows], dropping: Dropping | None = None
) -> None:
    """Change the reader's follows; with ``dropping`` (what, the values, whether a value is there), each
    value that was not there is an error line."""
    before: list[Follows] = []

    def remembered(current: Follows) -> Follows:
        before.append(current)
        return change(current)

    with app.database(create=False) as db:
        reader = _reader(db, email)
        follows = change_follows(db, reader.id, remembered)
    absent = []
    if dropping is not None:
        what, values, present = dropping
        absent = [value for value in values if not present(before[-1], value)]
        for value in absent:
            show.error(f"'{value}' is not {what} of {reader.email}")
    show.follows(reader.email, follows)
    if absent:
        raise SystemExit(USAGE if len(absent) == len(dropping[1]) else FAILURE)


def _reader(db: sqlite_utils.Database, email: str) -> Subscriber:
    reader = find_subscriber(db, email)
    if reader is None:
        fail(f"{email} is not on the list", code=USAGE)
    return reader
