"""Small editions written here: topics with their own vocabularies, so that what a reader's teaching
should bring is plain. As ranker inputs, or as an arXiv RSS feed to ingest."""

from __future__ import annotations

import random
from datetime import datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

from newsletter.cluster import PaperText

TOPICS = {
    "astro": "galaxy galaxies stellar star-formation redshift halo telescope quasar supernova cosmic "
    "luminosity spectroscopic survey exoplanet accretion disk black hole nebula",
    "nlp": "language model tokenizer translation sentence corpus syntax parsing dialogue transformer "
    "question answering summarization multilingual prompt word embeddings entity",
    "robot": "robot manipulator grasping locomotion legged gripper trajectory planning actuator "
    "navigation lidar quadruped teleoperation motion control kinematics arm",
    "bio": "protein folding gene expression enzyme membrane sequencing mutation microbiome "
    "transcription factor metabolic pathway antibody genome chromatin ribosome",
    "quantum": "qubit entanglement circuit decoherence superconducting error-correction hamiltonian "
    "photonic annealing fidelity bell inequality trapped ion teleportation spin",
    "econ": "market inflation monetary policy auction pricing consumer demand labor tax trade "
    "equilibrium firm wage interest household regulation",
    "climate": "precipitation warming ocean ice sheet carbon emissions aerosol monsoon drought "
    "atmospheric circulation sea level glacier permafrost rainfall",
    "graphs": "graph vertices edges chromatic planar coloring hypergraph matching spanning tree "
    "clique bipartite degree ramsey extremal",
    "fluids": "turbulence vortex viscous flow reynolds boundary layer navier stokes wake "
    "shear laminar droplet jet convection",
    "crypto": "encryption cipher key exchange signature lattice attack protocol adversary "
    "zero-knowledge hash secure privacy blockchain",
}
CATEGORIES = {
    "astro": "astro-ph.GA",
    "nlp": "cs.CL",
    "robot": "cs.RO",
    "bio": "q-bio.BM",
    "quantum": "quant-ph",
    "econ": "econ.GN",
    "climate": "physics.ao-ph",
    "graphs": "math.CO",
    "fluids": "physics.flu-dyn",
    "crypto": "cs.CR",
}
# A field no edition here covers: a reader who only reads about it finds nothing close.
BEETLES = (
    "beetle species genus specimens morphology larvae mites dorsal holotype coleoptera endemic setae mandible"
)
FILLER = ["we", "study", "this", "and", "show", "that", "our", "the", "results", "in", "a", "with", "for"]


def paper(topic: str, number: int, words: str | None = None) -> PaperText:
    vocabulary = (words or TOPICS[topic]).split()
    rng = random.Random(f"{topic}-{number}")
    title = " ".join(rng.sample(vocabulary, 3)).capitalize()
    sentences = []
    for _ in range(4):
        chosen = rng.sample(vocabulary, 5) + rng.sample(FILLER, 3)
        rng.shuffle(chosen)
        sentences.append(" ".join(chosen).capitalize() + ".")
    return PaperText(f"{topic}-{number:03d}", title, " ".join(sentences))


def edition(per_topic: int = 5, first: int = 0) -> list[PaperText]:
    return [paper(topic, first + i) for topic in TOPICS for i in range(per_topic)]


def arxiv_id(topic: str, number: int) -> str:
    """A plausible arXiv id for the paper: a topic is a block of numbers."""
    return f"2511.{list(TOPICS).index(topic) * 1000 + number + 1:05d}"


def topic_feed(topics: list[str], per_topic: int, published: datetime, first: int = 0) -> str:
    """An arXiv RSS listing of ``per_topic`` papers of each topic, numbered from ``first``."""
    items = []
    for topic in topics:
        for number in range(first, first + per_topic):
            text = paper(topic, number)
            identifier = arxiv_id(topic, number)
            items.append(
                f"""    <item>
      <title>{escape(text.title)}</title>
      <link>https://arxiv.org/abs/{identifier}</link>
      <description>arXiv:{identifier}v1 Announce Type: new
Abstract: {escape(text.abstract)}</description>
      <guid isPermaLink="false">oai:arXiv.org:{identifier}v1</guid>
      <category>{CATEGORIES[topic]}</category>
      <pubDate>{format_datetime(published)}</pubDate>
      <arxiv:announce_type>new</arxiv:announce_type>
      <dc:creator>{escape(topic.title())} Author {number}</dc:creator>
    </item>"""
            )
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">
  <channel>
    <title>Topics on arXiv.org</title>
    <link>http://rss.arxiv.org/rss/topics</link>
    <description>Papers written for tests.</description>
{chr(10).join(items)}
  </channel>
</rss>
"""
