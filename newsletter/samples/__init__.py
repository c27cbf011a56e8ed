"""The offline sample: fictional papers in the formats of rss.arxiv.org and the Hugging Face daily list.

Used when no live source can be reached, so the pipeline after fetching still has papers to work on.
Their ids (2600.000NN) use a month that arXiv never had, so they can never merge with a real paper.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.settings import SourceConfig

SAMPLE_DIR = Path(__file__).resolve().parent
ARXIV_SAMPLE = SAMPLE_DIR / "arxiv_sample.xml"
HF_SAMPLE = SAMPLE_DIR / "hf_daily_sample.json"


def sample_sources() -> list[SourceConfig]:
    return [
        SourceConfig(name="sample-arxiv", kind="arxiv_rss", url=ARXIV_SAMPLE.as_uri()),
        SourceConfig(name="sample-huggingface", kind="hf_daily", url=HF_SAMPLE.as_uri()),
    ]
