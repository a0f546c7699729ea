"""The ``auto`` distance threshold (``visionops.serving.unknown``): the split-conformal rank of the
held-out distances when there are enough, dlib's 0.6 as a prior when there are few, the strangers'
share estimated from the enrolled faces, and the record the served model carries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visionops.core.config import build_config
from visionops.data.preprocess import Split
from visionops.serving.unknown import (
    DLIB_PRIOR,
    choose_threshold,
    distance_scores,
    distance_threshold,
    leave_one_out_distances,
    nearest_distance,
    strangers_estimate,
    unknown_mask,
)
from visionops.training.packaging import served_extras  # imports torch at collection, not in a test


def _people(n_people: int, per_person: int, seed: int, spread: float = 0.02) -> Split:
    """128-d 'embeddings': ``per_person`` faces around each of ``n_people`` far-apart centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_people, 128))
    y = np.repeat(np.arange(n_people), per_person)
    x = centres[y] + rng.normal(0, spread, (len(y), 128))
    return Split(x.astype(np.float32), y.astype(np.int64))


def test_without_distances_the_prior_decides() -> None:
    chosen = distance_threshold(np.zeros(0))
    assert chosen["threshold"] == DLIB_PRIOR and chosen["prior_weight"] == 1.0
    assert chosen["n_distances"] == 0
    # One photo a person: no leave-one-out distance; auto is the prior, not "never unknown".
    assert choose_threshold("auto", None, np.zeros(0), "distance") == DLIB_PRIOR


def test_thin_evidence_leans_on_the_prior_and_rich_evidence_on_the_data() -> None:
    rng = np.random.default_rng(0)
    few = rng.uniform(0.2, 0.3, 10)
    thin = distance_threshold(few)
    # 10 of the 49 distances a 0.98 rank needs: the largest raised 39/49 of the way to 0.6.
    assert thin["rank"] is None and thin["prior_weight"] == pytest.approx(39 / 49)
    assert thin["threshold"] == pytest.approx(few.max() + 39 / 49 * (DLIB_PRIOR - few.max()))
    assert thin["threshold"] > 0.5  # the prior dominates
    many = rng.uniform(0.2, 0.3, 500)
    rich = distance_threshold(many)
    rank = math.ceil(501 * 0.98)
    assert rich["rank"] == rank and rich["prior_weight"] == 0.0
    assert rich["threshold"] == pytest.approx(np.sort(many)[rank - 1])
    assert rich["threshold"] < 0.3  # the data alone: the prior plays no part
    # The weight fades as distances come: 48 is still short of the rank, 49 reaches it (the largest).
    assert distance_threshold(many[:48])["prior_weight"] == pytest.approx(1 / 49)
    at = distance_threshold(many[:49])
    assert at["rank"] == 49 and at["threshold"] == pytest.approx(many[:49].max())


def test_the_prior_only_raises_a_threshold() -> None:
    wide = np.full(5, 0.8)  # a set whose faces lie further apart than dlib's 0.6
    assert distance_threshold(wide)["threshold"] == pytest.approx(0.8)
    assert distance_threshold(np.full(5, 0.3), prior=0.5)["threshold"] > 0.3


def test_quantile_one_is_the_largest_distance_and_no_prior() -> None:
    d = np.asarray([0.1, 0.2, 0.35])
    chosen = distance_threshold(d, quantile=1.0)
    assert chosen["threshold"] == pytest.approx(0.35) and chosen["prior_weight"] == 0.0


def test_the_rank_names_a_new_face_of_an_enrolled_person_at_the_promised_rate() -> None:
    """Exchangeable distances: a new one falls under the threshold at least 98% of the time, where
    the plain 0.98 quantile of 30 (the rule before) fell short of it."""
    rng = np.random.default_rng(1)
    named_rank, named_plain = [], []
    for _ in range(2000):
        d = rng.gamma(4.0, 0.05, 61)
        held, new = d[:60], d[60]
        named_rank.append(new <= distance_threshold(held, prior=0.0)["threshold"])
        named_plain.append(new <= np.quantile(held[:30], 0.98))
    assert np.mean(named_rank) >= 0.975
    assert np.mean(named_plain) < 0.97


def test_no_enrolled_face_is_answered_unknown_and_thin_evidence_names_held_out_ones() -> None:
    train, val = _people(6, 3, seed=2), _people(6, 1, seed=2)
    genuine = distance_scores(train.x, train.y, val.x, val.y)
    assert len(genuine) == 6 + 6 * 4  # val to train, and leave-one-out over 4 a person
    threshold = choose_threshold("auto", None, genuine, "distance")
    enrolled = np.concatenate([train.x, val.x])
    d_enrolled = nearest_distance(enrolled, enrolled)[0]
    assert not unknown_mask(d_enrolled, threshold, "distance").any()
    # Every enrolled face is named even when it is left out (thin evidence: above the largest).
    loo = leave_one_out_distances(enrolled, np.concatenate([train.y, val.y]))
    assert not unknown_mask(loo, threshold, "distance").any()


def test_strangers_estimate_from_the_enrolled_people_alone() -> None:
    people = _people(5, 4, seed=3)
    far = strangers_estimate(people.x, people.y, threshold=0.5)
    assert far == {"strangers_unknown": 1.0, "n_faces": 20}
    near = strangers_estimate(people.x, people.y, threshold=100.0)
    assert near["strangers_unknown"] == 0.0
    assert strangers_estimate(people.x[:4], people.y[:4], threshold=0.5) is None  # one person


def test_the_served_record_says_what_evidence_chose_the_threshold() -> None:
    people = _people(4, 5, seed=4)
    last = np.arange(len(people.y)) % 5 == 4
    train, val = Split(people.x[~last], people.y[~last]), Split(people.x[last], people.y[last])
    cfg = build_config(
        {
            "model": {"name": "face_embedding"},
            "data": {"image_size": 150, "channels": 3},
            "serving": {"unknown_threshold": "auto"},
        }
    )
    record = served_extras(cfg, None, train, val, encoder="dlib_face_v1")["unknown"]
    assert record["score"] == "distance" and record["setting"] == "auto"
    assert record["n_distances"] == 4 + 4 * 5 and record["quantile"] == 0.98
    assert record["prior"] == DLIB_PRIOR and 0 < record["prior_weight"] < 1
    assert record["quantile_setting"] is None
    assert record["threshold"] < 1.0  # near the people's spread, far below their distance apart
    assert record["strangers_estimate"] == {"strangers_unknown": 1.0, "n_faces": 20}
    fixed = build_config(
        {
            "model": {"name": "face_embedding"},
            "data": {"image_size": 150, "channels": 3},
            "serving": {"unknown_threshold": 0.5},
        }
    )
    record = served_extras(fixed, None, train, val, encoder="dlib_face_v1")["unknown"]
    assert record["threshold"] == 0.5 and "prior" not in record
    off = served_extras(build_config({}), None, train, val, encoder="dlib_face_v1")["unknown"]
    assert off["threshold"] is None and "strangers_estimate" not in off
