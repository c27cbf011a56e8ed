"""A paper's summary from its abstract: the sentence or two that say what the paper does or finds.

Most abstracts open with background ("X is a core step in ...", "In recent years ...") and only then say
what the paper proposes and what it shows. The summary picks those sentences instead of the first ones,
with no model: each sentence is scored by cue phrases of contribution ("we propose", "our method", "a
novel"), of result ("we show", "outperforms", "achieves ... on", "improves ... by 12%"), against cues of
background and motivation ("remains challenging", "has attracted", "however, existing methods"), of the
task alone ("we study", "we investigate") and of housekeeping ("code is available at"), plus where the
sentence sits: the idea usually follows the problem, the results come last. The best sentence is kept,
with a second one when both fit the budget and the second also says what the paper does or finds; they
are shown in their order in the abstract. Everything is deterministic: the same abstract always gives the
same summary.

The sentence splitter knows abbreviations ("e.g.", "et al.", "Fig. 2", "Phys. Rev. Lett."), initials
("A. Smith"), decimals ("3.5"), list numbers ("1. We ..."), and citations in brackets
("[Math. Ann. 390 (2024)]").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- sentences ------------------------------------------------------------------------------------------

# A candidate boundary: ., ! or ? (with closing quotes or brackets after it), whitespace, then something a
# sentence can start with. Whether it really ends a sentence is decided by what comes before.
_BOUNDARY = re.compile(r"(?<=[.!?])([\"'”’)\]]*)\s+(?=[\"'“‘(\[$\\]|[^\W_a-z])")
# Abbreviations that never end a sentence, whatever follows.
_NEVER_END = frozenset({"e.g", "i.e", "vs", "cf", "w.r.t", "viz", "resp", "approx", "ca", "a.k.a", "i.i.d"})
# Abbreviations that end a sentence only before a word a sentence starts with ("... et al. We show").
_ABBREVIATIONS = frozenset(
    {
        "al", "fig", "figs", "eq", "eqs", "ref", "refs", "sec", "secs", "sect", "no", "nos", "vol", "pp",
        "ch", "chap", "app", "tab", "thm", "lem", "prop", "cor", "def", "ex", "dr", "prof", "mr", "mrs",
        "ms", "st", "jr", "sr", "inc", "ltd", "co", "corp", "dept", "univ", "est", "phys", "rev", "lett",
        "math", "nat", "proc", "soc", "amer", "commun", "sci", "comput", "theor", "appl", "stat", "ann",
        "inst", "eng", "int", "natl", "acad", "conf", "symp", "trans", "j", "res", "mech", "chem", "biol",
        "astron", "astrophys", "mon", "not", "geophys", "contemp", "anal", "geom", "algebra", "camb",
        "phil", "invent", "discrete", "opt", "mater", "lond",
    }
)  # fmt: skip
# Words a sentence starts with: after an initial or an abbreviation they mean the sentence did end.
_STARTERS = frozenset(
    [
        "we",
        "our",
        "this",
        "these",
        "those",
        "the",
        "a",
        "an",
        "in",
        "here",
        "however",
        "moreover",
        "furthermore",
        "finally",
        "additionally",
        "also",
        "then",
        "thus",
        "therefore",
        "hence",
        "since",
        "if",
        "it",
        "its",
        "as",
        "to",
        "for",
        "by",
        "using",
        "based",
        "on",
        "with",
        "experiments",
        "experimental",
        "results",
        "extensive",
        "further",
        "specifically",
        "meanwhile",
        "despite",
        "although",
        "while",
        "when",
        "where",
        "our",
        "unlike",
        "compared",
        "overall",
        "importantly",
        "notably",
        "consequently",
        "first",
        "second",
        "third",
        "lastly",
        "next",
        "recently",
        "existing",
        "code",
        "there",
        "such",
        "one",
        "all",
        "both",
        "each",
        "several",
        "many",
        "most",
        "some",
        "what",
        "how",
        "why",
        "can",
        "do",
        "does",
        "is",
        "are",
        "recall",
        "let",
        "suppose",
        "assume",
        "given",
        "consider",
        "note",
        "at",
        "from",
        "after",
        "under",
        "inspired",
        "motivated",
        "building",
        "leveraging",
        "through",
        "unfortunately",
        "interestingly",
        "remarkably",
        "surprisingly",
        "together",
        "taken",
        "comprehensive",
        "numerical",
        "theoretical",
        "empirical",
    ]
)
# A full stop with no space after it, between a word and a word that starts a sentence ("tasks.We have").
_MISSING_SPACE = re.compile(r"(?<=[a-z]{3}[.!?])(?=[A-Z][a-z]*\b)")
_WORD_BEFORE = re.compile(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)\.$")
_DOTTED_CAPITALS = re.compile(r"(?:^|[\s(\[])(?:[A-Z]\.)+$")  # "J.", "A. B.", "U.S."
_ENUMERATOR = re.compile(r"(?:^|:\s+)\(?(?:\d{1,2}|[ivx]{1,4})\)?\.$")  # "1." alone, "...: 1."
_FIRST_WORD = re.compile(r"[\"'“‘(\[]*([^\W\d_]+)")
_BRACKET_REACH = 200  # an unclosed bracket this close before a boundary holds the sentence together


def _open_bracket(text: str) -> bool:
    """Whether ``text`` ends inside a (recently) opened bracket, as in "[Phys. Rev. Lett. 105, 190502 (".

    Round and square brackets close each other, as in the interval "[0,1)"; an unbalanced ")" of a list
    such as "i) ... ii) ..." does not count as opening anything.
    """
    depth = 0
    for ch in text[-_BRACKET_REACH:]:
        if ch in "([":
            depth += 1
        elif ch in ")]" and depth:
            depth -= 1
    return depth > 0


def _ends_sentence(before: str, after: str) -> bool:
    """Whether the full stop (or ! or ?) that ends ``before`` ends a sentence, given the text ``after`` it."""
    if before[-1] in "!?" or before.endswith(".."):
        return not _open_bracket(before)
    first = _FIRST_WORD.match(after)
    starter = bool(first) and first.group(1).lower() in _STARTERS
    tail = max(0, len(before) - 40)  # the patterns below look at the end of ``before`` only
    if _ENUMERATOR.search(before, tail):
        return False
    word = _WORD_BEFORE.search(before, tail)
    if word:
        name = word.group(1).lower()
        if name in _NEVER_END:
            return False
        if name == "etc":  # "text, images, etc. We ..." but "etc.)" is handled by the bracket test
            return not _open_bracket(before) and bool(first)
        if len(name) <= 2 and word.group(1).islower() and after[:1].isdigit():
            return False  # "BnF, fr. 2813", "p. 12"
        if name in _ABBREVIATIONS and not starter:
            return False
        if _DOTTED_CAPITALS.search(before, tail) and first and not starter:
            return False  # an initial before a name: "A. Smith", "U.S. Department"
    return not _open_bracket(before)


def _space_if_starter(match: re.Match[str]) -> str:
    word = _FIRST_WORD.match(match.string, match.end())
    return " " if word and word.group(1).lower() in _STARTERS else ""


def split_sentences(text: str) -> list[str]:
    """The sentences of a plain-text abstract, in order, each stripped; nothing of the text is dropped."""
    text = " ".join(text.split())
    text = _MISSING_SPACE.sub(_space_if_starter, text)
    if not text:
        return []
    found: list[str] = []
    start = 0
    for boundary in _BOUNDARY.finditer(text):
        end = boundary.end(1)  # after the full stop and any closing quote or bracket
        before = text[start:end]
        if before and _ends_sentence(text[start : boundary.start()], text[boundary.end() :]):
            found.append(before.strip())
            start = boundary.end()
    found.append(text[start:].strip())
    return [sentence for sentence in found if sentence]


# --- scoring --------------------------------------------------------------------------------------------


def _cues(*patterns: str) -> re.Pattern[str]:
    """One pattern of all the cues of a kind, matched against lower-cased text."""
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_WE = (
    r"\b(?:we|this (?:paper|work|study|article|letter|note|thesis)|the present (?:paper|work|study)|here we)"
)
_ADVERB = r"(?:\s+(?:also|further|then|first|additionally|instead|therefore|thus|newly|next|finally|now))?"

# The paper's own contribution: a method, model, system, dataset, proof or construction.
_IDEA = _cues(
    _WE
    + _ADVERB
    + r"\s+(?!(?:present|provide|give|offer)s? (?:a |an |the )?(?:\w+ )?(?:overview|survey|review|summary|"
    r"tutorial|discussion|perspective)\b)(?:propose|present|introduce|develop|design|devise|construct|formulate|build|create|"
    r"put forward|offer|provide|establish|derive|prove|obtain|give|extend|generali[sz]e|leverage|"
    r"employ|apply|adopt|use|utili[sz]e|implement|train|contribute|describe|outline|"
    r"address this|tackle this|bridge this|fill this|overcome)",
    _WE + r"\s+(?:proposes|presents|introduces|develops|designs|describes|provides|offers|establishes|"
    r"derives|proves|reports|constructs|formulates|extends|generali[sz]es)",
    r"\b(?:our|the proposed|the presented|the new)\s+(?:\w+[\s-]+){0,2}?(?:method|approach|model|framework|"
    r"algorithm|system|architecture|technique|scheme|pipeline|design|strategy|formulation|estimator|"
    r"analysis|solution|procedure|tool|dataset|benchmark|method's|idea|construction|proof|theory)s?\b",
    r"\b(?:a|an)\s+(?:novel|new|simple|unified|general|efficient|lightweight|principled|scalable)\b",
    r"(?<!so-)\b(?:called|named|dubbed|termed|coined)\b",
    r"^(?:to (?:this end|address|tackle|overcome|bridge|fill|solve|mitigate|alleviate|remedy|"
    r"close|resolve|handle))",
    r"\bkey (?:idea|insight|innovation)\b|\bwe (?:show|demonstrate) how\b",
    r"^(?:specifically|concretely|first|second|third|finally|in particular|moreover|furthermore|"
    r"additionally|unlike|instead),? (?:we|our)\b",
    r"\b(?:is|are) (?:based on|built on|designed to|trained (?:on|to|with)|composed of|equipped with)\b",
    r"\b(?:consists of|comprises|leverages|exploits|enables|incorporates|integrates|combines)\b",
)
# What the paper finds: measured gains, comparisons, proofs, observations.
_RESULT = _cues(
    _WE
    + _ADVERB
    + r"\s+(?:(?:have |also |further )*)(?:show(?:ed|n)?|find|found|demonstrated?|observed?|confirmed?|"
    r"report(?:ed)?|reveal(?:ed)?|identif(?:y|ied)|discover(?:ed)?|conclude[d]?|achieved?|"
    r"verif(?:y|ied)|validated?|measured?|detect(?:ed)?|estimated?|determined?|recover(?:ed)?|"
    r"uncover(?:ed)?|infer(?:red)?|see|saw|note[d]?|prove[d]? that|establish(?:ed)? that|obtain(?:ed)?)\b",
    r"\b(?:results?|experiments?|evaluations?|simulations?|analys[ie]s|findings?|observations?|"
    r"measurements?|tests?|studies|benchmarks?|comparisons?)\s+(?:\w+\s+){0,4}?(?:show|shows|showed|"
    r"demonstrate|demonstrates|demonstrated|indicate|indicates|indicated|reveal|reveals|revealed|"
    r"suggest|suggests|confirm|confirms|highlight|highlights|verify|verifies|validate|validates|"
    r"illustrate|illustrates|prove|proves|underscore|underscores)\b",
    r"\b(?:achiev|outperform|surpass|exceed|improv|reduc|increas|boost|beat|match|rival|attain|"
    r"yield|deliver|accelerat|speed|lower|rais|cut|halv|doubl|enhanc|gain)\w*\b[^.;]{0,80}?"
    r"(?:\d|\bby\b|\bover\b|\bthan\b|\bstate[- ]of[- ]the[- ]art\b|\bsota\b|\bbaselines?\b|"
    r"\bcompetitive\b|\bsignificant(?:ly)?\b|\bsubstantial(?:ly)?\b|\bconsistent(?:ly)?\b)",
    r"\boutperform\w*|\bsurpass\w*|\bstate[- ]of[- ]the[- ]art\b|\bsota\b|\bnew records?\b",
    r"\d(?:\.\d+)?\s*(?:%|×|x\b|times\b|-fold|fold\b|percentage points?|pp\b|db\b|σ\b)",
    r"^(?:results|conclusions?|findings)\s*:",
)
# Words that go with results but also with claims about the field ("significantly", "compared with").
_RESULT_HINT = _cues(
    r"\b(?:up to|as much as|on average|compared (?:to|with)|relative to|orders? of magnitude)\b",
    r"\b(?:significantly|substantially|consistently|considerably|markedly|dramatically)\b",
    r"\b(?:is|are|was|were|be|remains?) (?:found|shown|observed|confirmed|detected|measured|estimated|"
    r"obtained|determined|proven|constrained|consistent with|in (?:good |excellent )?agreement)\b",
    r"\b(?:leads? to|results? in|gives? rise to|allows? us to|enables? us to)\b",
    r"\b(?:our|these|the) (?:results|findings|analysis|experiments|simulations|observations|"
    r"measurements|data)\b",
)
# The problem and its background: how the field stands, what is hard, what others did.
_PROBLEM = _cues(
    r"\b(?:is|are|has been|have been|remains?|becomes?|became)\s+(?:a|an|the)?\s*(?:\w+\s+){0,2}?"
    r"(?:core|key|central|fundamental|important|crucial|critical|essential|major|significant|"
    r"long-standing|longstanding|open|active|growing|popular|promising|powerful|common|standard|"
    r"widely[- ]used|ubiquitous|vital|pivotal|prevalent|primary|main|challenging|difficult|"
    r"emerging)\b",
    r"\bremains? (?:challenging|difficult|unclear|unknown|elusive|limited|underexplored|"
    r"unexplored|an open|a challenge|largely|poorly|scarce|unsolved|understudied)",
    r"\b(?:has|have) (?:attracted|gained|received|drawn|garnered|emerged|become|shown (?:great|"
    r"remarkable|impressive|promising|significant|strong)|achieved (?:remarkable|impressive|"
    r"great|significant|notable)|demonstrated (?:remarkable|impressive|great|significant|strong)|"
    r"been (?:widely|extensively|increasingly|successfully)|revolutioni[sz]ed|transformed|"
    r"witnessed|seen)",
    r"^(?:in recent years|recent(?:ly)?|over the (?:past|last)|nowadays|currently|traditionally|"
    r"historically|conventionally|today|with the (?:rapid|rise|advent|growing|development|increasing|"
    r"proliferation|emergence|widespread)|despite|although|while|as\b|understanding|accurate|"
    r"reliable|efficient|many|most|numerous|existing|prior|previous|current|conventional|"
    r"standard|traditional|modern|large language models|however)",
    r"\bhowever,? (?:existing|current|most|many|prior|previous|these|such|conventional|traditional|"
    r"standard|they|it|this|their)\b",
    r"\b(?:existing|current|prior|previous|conventional|traditional|state-of-the-art) (?:\w+\s+){0,2}?"
    r"(?:methods|approaches|models|works|techniques|systems|studies|solutions|frameworks|algorithms|"
    r"literature|research)\b",
    r"\b(?:suffer|struggle|fail|lack|neglect|overlook|ignore|hinder|limit|restrict|hamper)s?\b",
    r"\b(?:limitations?|challenges?|bottlenecks?|drawbacks?|shortcomings?|obstacles?|gap|difficult(?:y|ies)|"
    r"issues?|problems?)\b",
    r"\b(?:increasingly|widely|extensively|commonly|typically|often|usually|generally)\b",
    r"\b(?:is|are) (?:known|believed|expected|thought|considered|widely|often|typically|usually|"
    r"generally|commonly)\b",
    r"\b(?:plays?|play) an? (?:\w+ )?(?:role|part)\b",
    r"^(?:background|motivation|introduction|context|purpose|objectives?|aims?)\s*:",
    r"\b(?:has|have|had) (?:been )?(?:\w+ly )?(?:proposed|introduced|developed|studied|investigated|"
    r"explored|used|applied|adopted|employed|revolutioni[sz]ed|transformed|improved|increased|enabled|"
    r"advanced|made|led|driven|spurred|sparked|become)\b",
)
# The question the paper asks, without yet saying what it does about it.
_TASK = _cues(
    _WE
    + _ADVERB
    + r"\s+(?:study|studies|investigate|investigates|consider|considers|examine|examines|explore|"
    r"explores|analy[sz]e|analy[sz]es|address|addresses|focus|focuses|aim|aims|seek|seeks|ask|"
    r"revisit|discuss|discusses|review|reviews|tackle|tackles|evaluate|evaluates|assess|assesses|"
    r"compare|compares|characteri[sz]e|look at|are interested)",
    r"\b(?:present|provide|give|offer)s? (?:a |an |the )?(?:\w+ )?(?:overview|survey|review|summary|"
    r"tutorial|discussion|perspective)\b",
    r"\b(?:the (?:aim|goal|objective|purpose|focus) of this|this (?:paper|work|study) (?:aims|seeks|"
    r"focuses))\b",
    r"\b(?:in this (?:paper|work|study|article|note|letter)),? we (?:study|investigate|consider|examine|"
    r"explore|address|focus|analy[sz]e|discuss|revisit)\b",
)
# Housekeeping: where the code is, how the paper is organised, where it was accepted.
_OTHER = _cues(
    r"\b(?:code|codes|data|dataset|datasets|models?|implementation|weights|source code|demo|project "
    r"page|checkpoints?|benchmark|materials?)\b[^.]{0,40}\b(?:is|are|will be|have been|has been)?\s*"
    r"(?:publicly |freely |openly |made )?(?:available|released|open-sourced|accessible)\b",
    r"^(?:we|our)\s+(?:will\s+|also\s+|publicly\s+|further\s+)*(?:release|open-source|open source|"
    r"make\s+(?:\w+\s+){1,4}?(?:publicly\s+|freely\s+)?available)\b",
    r"https?://|github\.com|\bgithub\b|huggingface\.co|\.github\.io|\bavailable at\b",
    r"\b(?:accepted|published|to appear|submitted)\b (?:at|in|to|for)\b",
    r"\b(?:the (?:rest|remainder) of (?:this|the) (?:paper|article))|\b(?:pages|figures|tables)\b\W*$",
    r"\bthis (?:paper|article|manuscript) is (?:organi[sz]ed|structured)\b",
)
_NUMBER = re.compile(r"\d")
_COPULA_OPENING = re.compile(
    r"^(?:[\w\-()'’]+\s+){1,6}?(?:is|are|refers to|denotes|describes)\b", re.IGNORECASE
)
_PERSONAL = re.compile(r"\b(?:we|our|us|this (?:paper|work|study|article|letter|note))\b", re.IGNORECASE)


@dataclass(frozen=True)
class Scored:
    """One sentence of an abstract and how much it looks like the paper's contribution or result."""

    index: int
    text: str
    score: float


def score_sentences(sentences: list[str]) -> list[Scored]:
    """Each sentence with its score: cues of idea and result count for it, of problem, task and
    housekeeping against, and the position prior favours the middle and the end over the opening."""
    count = len(sentences)
    scored = []
    for index, sentence in enumerate(sentences):
        lower = sentence.lower()
        idea = len(_IDEA.findall(lower))
        result = len(_RESULT.findall(lower)) + 0.5 * min(len(_RESULT_HINT.findall(lower)), 2)
        problem = len(_PROBLEM.findall(lower))
        task = len(_TASK.findall(lower))
        score = 1.6 * min(idea, 3) + 1.3 * min(result, 4) - 1.0 * min(problem, 3) - 0.8 * min(task, 2)
        if _OTHER.search(lower):
            score -= 4.0
        if _PERSONAL.search(sentence):
            score += 0.6
        elif not idea and not result:
            score -= 0.8  # no "we", no cue: most often a statement about the field
        if _COPULA_OPENING.match(sentence) and not _PERSONAL.search(sentence) and not result:
            score -= 0.7  # "X is ...": a definition or a claim about the field
        if _NUMBER.search(sentence) and result:
            score += 0.3
        score += _position_prior(index, count)
        if sentence.startswith(("(", "[")):
            score -= 2.0  # an aside
        words = len(sentence.split())
        if words < 6:
            score -= 1.5  # a fragment says too little to stand alone
        scored.append(Scored(index, sentence, round(score, 6)))
    return scored


def _position_prior(index: int, count: int) -> float:
    """Openings are background; contributions follow and results end an abstract."""
    if count == 1:
        return 0.0
    relative = index / (count - 1)
    prior = 0.0
    if index == 0:
        prior -= 1.5
    elif index == 1:
        prior -= 0.3
    if relative >= 0.3:
        prior += 0.4
    if index == count - 1 and count > 3:
        prior -= 0.2  # the last sentence is often an outlook or a link
    return prior


# --- the summary ----------------------------------------------------------------------------------------

_SECOND_MIN = 1.5  # a second sentence must itself look like an idea or a result


@dataclass(frozen=True)
class Summary:
    """The summary's text, the indexes of the abstract's sentences it is made of, and whether it had to be
    cut (a single sentence longer than the budget)."""

    text: str
    indexes: tuple[int, ...]
    cut: bool


def pick_summary(abstract: str, *, max_chars: int = 300) -> Summary:
    """The sentence or two of ``abstract`` that best say what the paper does or finds, within ``max_chars``."""
    found = split_sentences(abstract)
    if not found:
        return Summary("", (), False)
    scored = score_sentences(found)
    # Best first; on a tie, the earlier sentence.
    ranked = sorted(scored, key=lambda s: (-s.score, s.index))
    fitting = [s for s in ranked if len(s.text) <= max_chars]
    best = ranked[0]
    if len(best.text) > max_chars and fitting and fitting[0].score >= best.score - 1.0:
        best = fitting[0]  # a whole sentence nearly as good beats a cut one
    chosen = [best]
    room = max_chars - len(best.text) - 1
    for other in ranked:
        if other is best or other.score < _SECOND_MIN or len(other.text) > room:
            continue
        if len(best.text) >= max_chars // 2 and other.score < best.score:
            continue  # a long first pick takes a second only if it is at least as good
        chosen.append(other)
        break
    chosen.sort(key=lambda s: s.index)
    text = " ".join(s.text for s in chosen)
    cut = len(text) > max_chars
    if cut:
        text = _cut(text, max_chars)
    return Summary(text, tuple(s.index for s in chosen), cut)


def summarize(abstract: str, *, max_chars: int = 300) -> str:
    """A card's summary of an abstract (see :func:`pick_summary`)."""
    return pick_summary(abstract, max_chars=max_chars).text


def _cut(text: str, max_chars: int) -> str:
    cut = text[: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:-–—")
    return cut + "…"
