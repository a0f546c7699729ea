"""The gate's per-class rules (``release.gate_classes``): a model better on average that loses one
class is rejected naming it; classes below the support are listed as not judged; the floor holds
with or without a champion; a class only one model knows is not compared."""

from __future__ import annotations

import numpy as np

from visionops.core.config import GateConfig
from visionops.evaluation.paired import BaselinePredictions, PairedPredictions
from visionops.release.gate import decide

# Only the per-class rules can reject here: the thresholds and the average comparison pass.
OPEN = GateConfig(min_accuracy=0.0, min_macro_f1=0.0, max_regression=1.0)
CHAMPION = {"version": "3", "accuracy": 0.0, "macro_f1": 0.0}


def _answers(right: dict[str, tuple[int, int]]) -> tuple[list[str], list[str]]:
    """Test labels and predictions: per class (images, how many labelled right); a wrong answer
    is the next class's label."""
    names = sorted(right)
    y, pred = [], []
    for i, name in enumerate(names):
        n, ok = right[name]
        y += [name] * n
        pred += [name] * ok + [names[(i + 1) % len(names)]] * (n - ok)
    return y, pred


def _paired(champion: dict, candidate: dict, labels: str = "abcd") -> PairedPredictions:
    y, champ = _answers(champion)
    y2, cand = _answers(candidate)
    assert y == y2
    return PairedPredictions(y, cand, champ, list(labels), list(labels))


def _metrics(p: PairedPredictions) -> dict[str, float]:
    acc = float(np.mean(np.asarray(p.candidate) == np.asarray(p.y_true)))
    return {"accuracy": acc, "macro_f1": acc}


def test_better_on_average_but_one_class_lost_is_rejected_naming_it() -> None:
    paired = _paired(
        {"a": (20, 18), "b": (20, 18), "c": (20, 18), "d": (20, 18)},
        {"a": (20, 20), "b": (20, 20), "c": (20, 20), "d": (20, 14)},
    )
    assert _metrics(paired)["accuracy"] > 0.9  # 74 of 80 against the champion's 72
    decision = decide(_metrics(paired), CHAMPION, OPEN, paired)
    assert decision.passed is False
    assert (
        "class 'd': recall 70.0% against 90.0% for champion v3 on the same 20 test images, "
        "20.0 points down > gate.max_class_regression 10"
    ) in decision.reasons
    # The table, worst first, with both recalls and the change in points.
    worst = decision.classes[0]
    assert (worst["group"], worst["support"], worst["judged"]) == ("d", 20, True)
    assert (worst["recall"], worst["champion_recall"], worst["delta_points"]) == (0.7, 0.9, -20.0)
    assert [r["group"] for r in decision.classes[1:]] == ["a", "b", "c"]
    # A wider margin lets it through, saying how close it came.
    wide = decide(
        _metrics(paired), CHAMPION, OPEN.model_copy(update={"max_class_regression": 25}), paired
    )
    assert wide.passed, wide.reasons
    assert (
        "no class fell more than 25 points of recall below champion v3 (4 judged, the largest "
        "change -20.0 points on 'd')"
    ) in wide.reasons
    off = decide(
        _metrics(paired), CHAMPION, OPEN.model_copy(update={"max_class_regression": None}), paired
    )
    assert off.passed and not any("class" in r for r in off.reasons)


def test_classes_below_the_support_are_listed_as_not_judged() -> None:
    # 'c' has 4 test images and loses 3 of them: too few to judge, listed, the model passes.
    paired = _paired(
        {"a": (20, 18), "b": (12, 10), "c": (4, 4)},
        {"a": (20, 20), "b": (12, 11), "c": (4, 1)},
        labels="abc",
    )
    decision = decide(_metrics(paired), CHAMPION, OPEN, paired)
    assert decision.passed, decision.reasons
    assert (
        "not judged, fewer than gate.min_class_support=10 test images: class c (4)"
    ) in decision.reasons
    assert {r["group"]: r["judged"] for r in decision.classes} == {"a": True, "b": True, "c": False}
    # With a smaller bar it is judged, and rejected.
    strict = decide(
        _metrics(paired), CHAMPION, OPEN.model_copy(update={"min_class_support": 4}), paired
    )
    assert strict.passed is False
    assert any(r.startswith("class 'c': recall 25.0% against 100.0%") for r in strict.reasons)


def test_the_floor_holds_without_a_champion() -> None:
    y, pred = _answers({"a": (20, 20), "b": (20, 19), "c": (20, 11)})
    answers = BaselinePredictions(y, pred, {})
    metrics = {"accuracy": 50 / 60, "macro_f1": 50 / 60}
    assert decide(metrics, None, OPEN, baselines=answers).passed  # off by default
    floor = OPEN.model_copy(update={"min_class_recall": 0.6})
    decision = decide(metrics, None, floor, baselines=answers)
    assert decision.passed is False
    assert (
        "class 'c': recall 55.0% < gate.min_class_recall 60.0% (20 test images)" in decision.reasons
    )
    assert [r["group"] for r in decision.classes] == ["c", "b", "a"]  # lowest recall first


def test_a_class_only_the_candidate_knows_is_not_compared() -> None:
    # 'e' is new: the champion cannot recall it (0%), which is no regression of the candidate's.
    y, champ = _answers({"a": (20, 18), "b": (20, 18), "e": (20, 0)})
    _, cand = _answers({"a": (20, 18), "b": (20, 18), "e": (20, 15)})
    paired = PairedPredictions(y, cand, champ, list("abe"), list("ab"))
    decision = decide(_metrics(paired), CHAMPION, OPEN, paired)
    assert decision.passed, decision.reasons
    assert [r["group"] for r in decision.classes] == ["a", "b"]


def test_the_model_card_shows_each_class_beside_the_champion_worst_first() -> None:
    from visionops.evaluation.report import model_card

    paired = _paired(
        {"a": (20, 18), "b": (20, 18), "c": (3, 3)},
        {"a": (20, 20), "b": (20, 15), "c": (3, 1)},
        labels="abc",
    )
    decision = decide(_metrics(paired), CHAMPION, OPEN, paired)
    card = model_card(
        name="m",
        version="4",
        cfg={},
        metrics=decision.metrics,
        decision=decision.to_dict(),
        lineage={},
        labels=list("abc"),
        n_test=43,
    )
    table = card.split("## Per class, worst first\n\n")[1].split("\n\n")[0].splitlines()
    assert table == [
        "| class | test images | recall | champion | change | judged |",
        "|---|---|---|---|---|---|",
        "| c | 3 | 33.3% | 100.0% | -66.7 | no (too few) |",
        "| b | 20 | 75.0% | 90.0% | -15.0 | yes |",
        "| a | 20 | 100.0% | 90.0% | +10.0 | yes |",
    ]
    assert "class 'b': recall 75.0% against 90.0% for champion v4" not in card  # v3 is champion
    assert "class 'b': recall 75.0% against 90.0% for champion v3" in card
