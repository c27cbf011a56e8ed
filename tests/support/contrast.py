"""WCAG AA contrast, measured in chromium on what a page or an email really shows.

``CONTRAST_CHECK`` runs in the page: for every visible text (each text node's element) it takes the
computed color and the background behind it (the first opaque background color up the ancestors, with
the translucent ones above it composited, over the canvas of the color scheme), the font size and weight,
and checks the WCAG 2 ratio: 4.5:1, or 3:1 for large text (24px, or 18.66px bold). A form control's
edge (its border, else its own background) must stand 3:1 against what surrounds it, and the text typed
into a field 4.5:1 against the field. It returns every failure as a line: selector, text, colors, ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

CONTRAST_CHECK = r"""
() => {
  const parse = (value) => {
    const m = /rgba?\(([^)]+)\)/.exec(value || "");
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = (c) => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const hex = (c) => "#" + c.slice(0, 3).map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");
  // The canvas under everything: the system color Canvas as the page's color scheme resolves it (dark
  // only when the page declares it supports dark, by meta tag or CSS).
  const probe = document.createElement("div");
  probe.style.backgroundColor = "Canvas";
  document.body.appendChild(probe);
  const canvas = parse(getComputedStyle(probe).backgroundColor) || [255, 255, 255, 1];
  probe.remove();
  const backgroundOf = (element) => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const bg = parse(getComputedStyle(e).backgroundColor);
      if (bg && bg[3] > 0) {
        layers.push(bg);
        if (bg[3] >= 1) break;
      }
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), canvas);
  };
  const describe = (element) => {
    const parts = [];
    for (let e = element; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      let part = e.tagName.toLowerCase();
      if (e.id) part += "#" + e.id;
      const classes = (typeof e.className === "string" ? e.className : "").trim().split(/\s+/).filter(Boolean);
      if (classes.length) part += "." + classes.slice(0, 2).join(".");
      parts.unshift(part);
    }
    return parts.join(" > ");
  };
  const shown = (element) => {
    if (!element.getClientRects().length) return false;
    for (let e = element; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.visibility === "hidden" || style.display === "none" || Number(style.opacity) === 0) return false;
    }
    return true;
  };
  const failures = [];
  const seen = new Set();
  const checkText = (element, sample) => {
    const style = getComputedStyle(element);
    const size = parseFloat(style.fontSize);
    const bold = Number(style.fontWeight) >= 700 || style.fontWeight === "bold";
    const large = size >= 24 || (size >= 18.66 && bold);
    const need = large ? 3 : 4.5;
    const background = backgroundOf(element);
    const color = over(parse(style.color), background);
    const measured = ratio(color, background);
    const key = describe(element) + "|" + hex(color) + "|" + hex(background);
    if (measured + 1e-6 < need && !seen.has(key)) {
      seen.add(key);
      failures.push(`${describe(element)} "${sample.slice(0, 40)}": ${hex(color)} on ${hex(background)} `
        + `= ${measured.toFixed(2)}:1, needs ${need}:1 (${size}px, weight ${style.fontWeight})`);
    }
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.replace(/\s+/g, " ").trim();
    const element = node.parentElement;
    if (!text || !element || ["SCRIPT", "STYLE", "NOSCRIPT", "OPTION", "TITLE"].includes(element.tagName)) continue;
    if (!shown(element)) continue;
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width < 1 || box.height < 1) continue;
    checkText(element, text);
  }
  const controls = "button, select, textarea, a.button, .nl-btn td[bgcolor], "
    + "input:not([type=hidden]):not([type=checkbox]):not([type=radio]):not([type=file])";
  for (const control of document.querySelectorAll(controls)) {
    if (!shown(control)) continue;
    const style = getComputedStyle(control);
    if (["INPUT", "TEXTAREA", "SELECT"].includes(control.tagName)) checkText(control, control.value || control.name || "(field)");
    const around = backgroundOf(control.parentElement);
    const own = parse(style.backgroundColor);
    const border = parse(style.borderTopColor);
    const edges = [];
    if (parseFloat(style.borderTopWidth) > 0 && border && border[3] > 0) edges.push(over(border, around));
    if (own && own[3] > 0) edges.push(over(own, around));
    if (!edges.length) continue;  // a control drawn as text only: its text was checked
    const best = Math.max(...edges.map((edge) => ratio(edge, around)));
    if (best + 1e-6 < 3) {
      failures.push(`${describe(control)} (control edge): ${edges.map(hex).join("/")} on ${hex(around)} `
        + `= ${best.toFixed(2)}:1, needs 3:1`);
    }
  }
  return failures;
}
"""

# Whether any category code on the page wraps inside itself ("eess.A / S"): each code's text has one line box.
BROKEN_CODES = r"""
() => {
  const range = document.createRange();
  const broken = [];
  for (const code of document.querySelectorAll(".choices .muted")) {
    range.selectNodeContents(code);
    const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
    if (lines.size > 1) broken.push(code.textContent);
  }
  return broken;
}
"""

SCHEMES = ("light", "dark")
WIDTHS = (390, 1200)


def audit(
    browser: Any,
    url: str,
    name: str,
    shots: Path,
    *,
    storage_state: Any = None,
    then: Callable[[Any], None] | None = None,
) -> tuple[list[str], list[str]]:
    """The page at ``url`` (after ``then(page)``, for a page a form leads to) in both color schemes at a
    phone's and a desktop's width: every contrast failure, and every subresource that failed to load
    (a favicon 404, a missing stylesheet). Screenshots go to ``shots`` as ``{name}-{scheme}-{width}.png``."""
    failures: list[str] = []
    missing: list[str] = []
    for scheme in SCHEMES:
        for width in WIDTHS:
            context = browser.new_context(
                viewport={"width": width, "height": 900}, storage_state=storage_state
            )
            page = context.new_page()
            page.emulate_media(color_scheme=scheme)
            page.on(
                "response",
                lambda response: (
                    missing.append(f"{name}: {response.status} {response.url}")
                    if response.status >= 400 and response.request.resource_type != "document"
                    else None
                ),
            )
            page.goto(url)
            if then is not None:
                then(page)
            page.wait_for_load_state("load")
            page.screenshot(path=str(shots / f"{name}-{scheme}-{width}.png"), full_page=True)
            failures += [f"{name} ({scheme}, {width}px): {line}" for line in page.evaluate(CONTRAST_CHECK)]
            context.close()
    return failures, missing
