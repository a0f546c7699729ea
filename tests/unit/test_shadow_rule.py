"""The shadow rule on its own (``serving.shadow``): agreement of two models' answers on the same
files, the batches that count (those beside the champion in service), and the promotion bars."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from visionops.serving.shadow import compare, shadow_evidence, shadow_rule


def test_agreement_counts_the_files_both_labelled_and_names_the_disagreements() -> None:
    champion = pd.DataFrame(
        {"label": ["a", "a", "b", "c", None], "probability": [0.9, 0.8, 0.7, 0.6, None]}
    )
    challenger = pd.DataFrame(
        {"label": ["a", "b", "b", "b", "a"], "probability": [0.5, 0.5, 0.5, 0.5, 0.5]}
    )
    figures = compare(champion, challenger)
    assert figures["n"] == 4 and figures["agreement"] == 0.5
    assert figures["champion_confidence"] == pytest.approx(0.75)
    assert figures["disagreements"] == [
        {"champion": "a", "challenger": "b", "images": 1},
        {"champion": "c", "challenger": "b", "images": 1},
    ]


def _tags(*entries: tuple[str, int, float]) -> dict[str, str]:
    rows = [{"champion_version": v, "n": n, "agreement": a} for v, n, a in entries]
    return {"visionops.shadow_batches": json.dumps(rows)}


def test_only_batches_beside_the_champion_in_service_count() -> None:
    tags = _tags(("1", 100, 0.9), ("2", 50, 0.5), ("2", 150, 0.9))
    entries = json.loads(tags["visionops.shadow_batches"])
    assert shadow_evidence(entries, "2") == (2, 200, pytest.approx(0.8))
    assert shadow_rule(tags, "2", 0, 0.9) == (True, None)  # not asked for
    ok, why = shadow_rule(tags, "2", 3, 0.5)
    assert not ok and why == (
        "shadow scoring: 2 batch(es) scored beside champion v2 (200 images, agreement 80.0%), "
        "registry.min_shadow_batches=3 needed"
    )
    ok, why = shadow_rule(tags, "2", 2, 0.85)
    assert not ok and why.endswith("below registry.min_shadow_agreement 85.0%")
    ok, why = shadow_rule(tags, "2", 2, 0.8)
    assert ok and why.endswith("at least 2 and 80.0%")
    assert shadow_rule(tags, None, 2, 0.8)[0] is True  # nothing in service to shadow
