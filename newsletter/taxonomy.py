"""arXiv's subject classification: every archive and category code a reader can follow.

The taxonomy is fixed and public (https://arxiv.org/category_taxonomy). Listed here are the current
archives and their categories, including the alias codes arXiv still prints on papers (``math.MP`` for
``math-ph``, ``stat.TH`` for ``math.ST``, ``eess.SY`` for ``cs.SY``...), so that a choice matches however a
feed spells it. Archives without subdivisions (``hep-th``, ``quant-ph``...) are categories themselves.
"""

from __future__ import annotations

from newsletter.config_keys import closest

_SUBJECTS: dict[str, tuple[str, ...]] = {
    "astro-ph": ("CO", "EP", "GA", "HE", "IM", "SR"),
    "cond-mat": (
        "dis-nn", "mes-hall", "mtrl-sci", "other", "quant-gas", "soft", "stat-mech", "str-el", "supr-con",
    ),
    "cs": (
        "AI", "AR", "CC", "CE", "CG", "CL", "CR", "CV", "CY", "DB", "DC", "DL", "DM", "DS", "ET", "FL", "GL",
        "GR", "GT", "HC", "IR", "IT", "LG", "LO", "MA", "MM", "MS", "NA", "NE", "NI", "OH", "OS", "PF", "PL",
        "RO", "SC", "SD", "SE", "SI", "SY",
    ),
    "econ": ("EM", "GN", "TH"),
    "eess": ("AS", "IV", "SP", "SY"),
    "gr-qc": (),
    "hep-ex": (),
    "hep-lat": (),
    "hep-ph": (),
    "hep-th": (),
    "math": (
        "AC", "AG", "AP", "AT", "CA", "CO", "CT", "CV", "DG", "DS", "FA", "GM", "GN", "GR", "GT", "HO", "IT",
        "KT", "LO", "MG", "MP", "NA", "NT", "OA", "OC", "PR", "QA", "RA", "RT", "SG", "SP", "ST",
    ),
    "math-ph": (),
    "nlin": ("AO", "CD", "CG", "PS", "SI"),
    "nucl-ex": (),
    "nucl-th": (),
    "physics": (
        "acc-ph", "ao-ph", "app-ph", "atm-clus", "atom-ph", "bio-ph", "chem-ph", "class-ph", "comp-ph",
        "data-an", "ed-ph", "flu-dyn", "gen-ph", "geo-ph", "hist-ph", "ins-det", "med-ph", "optics",
        "plasm-ph", "pop-ph", "soc-ph", "space-ph",
    ),
    "q-bio": ("BM", "CB", "GN", "MN", "NC", "OT", "PE", "QM", "SC", "TO"),
    "q-fin": ("CP", "EC", "GN", "MF", "PM", "PR", "RM", "ST", "TR"),
    "quant-ph": (),
    "stat": ("AP", "CO", "ME", "ML", "OT", "TH"),
}  # fmt: skip

ARCHIVES: frozenset[str] = frozenset(_SUBJECTS)
CATEGORIES: frozenset[str] = frozenset(
    f"{archive}.{subject}" for archive, subjects in _SUBJECTS.items() for subject in subjects
)
# Lower-cased code -> arXiv's spelling, so "cs.lg" is understood as cs.LG.
_CANONICAL = {code.lower(): code for code in ARCHIVES | CATEGORIES}


def canonical_category(code: str) -> str | None:
    """arXiv's spelling of an archive or category code (``cs``, ``cs.LG``), or None if it is not one."""
    return _CANONICAL.get(code.strip().lower())


def is_category(code: str) -> bool:
    return canonical_category(code) == code


def closest_category(code: str) -> str | None:
    """The code ``code`` was probably meant to be (``cs.LGG``: cs.LG), if one is close enough."""
    match = closest(code.strip().lower(), _CANONICAL, cutoff=0.75)
    return _CANONICAL[match] if match else None
