"""Unknown people on real photographs (the Yale faces, ``../shared/datasets/yalefaces``; skipped
without it, failed when VISIONOPS_REQUIRE_SHARED=1).

Five folds: each holds three people out of training as strangers (every person is a stranger once).
The enrolled twelve are split train/val/test as preprocess splits; the ``face_embedding`` head is
trained by the project's engine on dlib embeddings; the unknown threshold is chosen on the
held-out known faces as the train stage does (``visionops.serving.unknown``). Pooled over the
folds: at least 90% of the strangers'
photos must be answered ``unknown`` and at least 95% of the enrolled people's test photos named
correctly. The photos come from the ``yale`` fixture (tests/conftest.py), a fold from ``testkit.yale_fold``.
One fold also goes through the served pyfunc, from chips and from whole PNG photos, on a real MLflow
store: tests/integration/test_face_unknown_yale_served.py.
"""

from __future__ import annotations

from typing import Any

from testkit import YALE, needs_shared
from testkit import yale_fold as _fold
from visionops.serving.unknown import UNKNOWN

pytestmark = needs_shared(YALE)


def test_strangers_are_unknown_and_enrolled_people_are_named(yale: dict[str, Any]) -> None:
    people = sorted(set(yale["labels"]))
    right = named = unknown = strangers = 0
    for k in range(0, len(people), 3):
        fold = _fold(yale, people[k : k + 3])
        truth = [yale["labels"][i] for i in fold["part"]["test"]]
        right += sum(a == t for a, t in zip(fold["test_answers"], truth))
        named += len(truth)
        unknown += sum(a == UNKNOWN for a in fold["stranger_answers"])
        strangers += len(fold["stranger_answers"])
    print(
        f"\nYale, 5 folds x 3 strangers: enrolled test photos named correctly {right}/{named} "
        f"({right / named:.1%}); strangers' photos answered unknown {unknown}/{strangers} "
        f"({unknown / strangers:.1%})"
    )
    assert unknown / strangers >= 0.90
    assert right / named >= 0.95
