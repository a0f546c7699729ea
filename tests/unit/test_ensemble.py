"""K-fold ensembles (visionops.training.ensemble, .kfold): folds that are stratified and keep groups
whole, the soft-voting network, out-of-fold probabilities, and a retry that reuses finished members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from visionops.core.config import ConfigError, build_config
from visionops.data.preprocess import Split
from visionops.models import build_model
from visionops.training.engine import EpochMetrics
from visionops.training.ensemble import SoftVotingEnsemble, fold_assignments, oof_scores
from visionops.training.kfold import fit_kfold, member_paths, remove_member_files


def test_train_folds_is_one_by_default_and_bounded_by_name() -> None:
    assert build_config({}).train.folds == 1
    assert build_config({"train": {"folds": 5}}).train.folds == 5
    for bad in (0, 21):
        with pytest.raises(ConfigError, match=r"train\.folds"):
            build_config({"train": {"folds": bad}})


def _labels_and_groups(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 unbalanced classes (60, 120, 30 images) in groups of 1 to 4 near-copies, one label each."""
    rng = np.random.default_rng(seed)
    y, groups, gid = [], [], 0
    for c, n in enumerate((60, 120, 30)):
        left = n
        while left:
            size = min(left, int(rng.integers(1, 5)))
            y += [c] * size
            groups += [gid] * size
            gid, left = gid + 1, left - size
    order = rng.permutation(len(y))  # rows of a group need not be next to each other
    return np.array(y)[order], np.array(groups)[order]


def test_folds_are_stratified_keep_groups_whole_and_follow_the_seed() -> None:
    y, groups = _labels_and_groups()
    k = 5
    folds = fold_assignments(y, groups, k, seed=7)
    assert sorted(np.unique(folds)) == list(range(k))
    for g in np.unique(groups):  # no group in two folds
        assert len(np.unique(folds[groups == g])) == 1, g
    for c, n in zip(range(3), (60, 120, 30)):
        per_fold = np.bincount(folds[y == c], minlength=k)
        # Each fold holds about 1/k of every class: off by less than the largest group (4).
        assert np.all(np.abs(per_fold - n / k) < 4), (c, per_fold)
    assert np.array_equal(folds, fold_assignments(y, groups, k, seed=7))
    assert not np.array_equal(folds, fold_assignments(y, groups, k, seed=8))


def test_more_folds_than_a_class_has_groups_is_an_error_naming_the_key() -> None:
    y = np.array([0] * 12 + [1] * 6)
    groups = np.concatenate([np.arange(12), [100, 100, 100, 101, 101, 101]])  # class 1: 2 groups
    with pytest.raises(ConfigError, match=r"train\.folds.*'b': 2.*at most 2"):
        fold_assignments(y, groups, 3, seed=0, labels=["a", "b"])
    assert len(np.unique(fold_assignments(y, groups, 2, seed=0))) == 2


def _members(n: int, classes: int = 4) -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.Sequential(nn.Linear(6, classes), nn.Tanh(), nn.Linear(classes, classes))
        for _ in range(n)
    ]


def test_softmax_of_the_ensemble_is_the_mean_of_the_members_softmax() -> None:
    members = _members(3)
    with torch.no_grad():
        members[2][2].weight.mul_(40)  # one confident member: probabilities near 0 and 1
    ensemble = SoftVotingEnsemble(members).eval()
    x = torch.randn(32, 6)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(dim=0)
        got = torch.softmax(ensemble(x), dim=1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # Not just any of the members, nor the softmax of their mean logits.
    with torch.no_grad():
        mean_logits = torch.softmax(torch.stack([m(x) for m in members]).mean(dim=0), dim=1)
    assert (got - mean_logits).abs().max() > 1e-3


def test_the_ensemble_exports_and_reloads(tmp_path: Path) -> None:
    ensemble = SoftVotingEnsemble(_members(2)).eval()
    x = torch.randn(5, 6)
    program = torch.export.export(ensemble, (x,))
    torch.export.save(program, tmp_path / "ensemble.pt2")
    loaded = torch.export.load(tmp_path / "ensemble.pt2").module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ensemble(x))


def test_oof_scores() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    accuracy, loss = oof_scores(probs, np.array([0, 1, 1]))
    assert accuracy == pytest.approx(2 / 3)
    assert loss == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])))


def _features(n: int, seed: int) -> Split:
    """Three classes of 128-d 'embeddings' (what face_embedding's heads train on)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.eye(128, dtype=np.float32)[:3]
    return Split((centres[y] + rng.normal(0, 0.3, (n, 128))).astype(np.float32), y.astype(np.int64))


FIT = {
    "max_epochs": 4,
    "batch_size": 16,
    "learning_rate": 1e-2,
    "weight_decay": 0.0,
    "patience": 10,
    "device": torch.device("cpu"),
}


def _head() -> nn.Module:
    return build_model("face_embedding", in_channels=128, image_size=1, num_classes=3, dropout=0.0)


class _Crash(Exception):
    pass


def test_members_score_their_own_fold_and_a_retry_reuses_finished_members(tmp_path: Path) -> None:
    data = _features(90, 0)
    folds = fold_assignments(data.y, np.arange(90), 3, seed=1)
    plain = fit_kfold(_head, data, folds, seed=5, fit_kwargs=FIT, tta=[])
    # Out-of-fold: each row scored by the member that did not train on it.
    for k, member in enumerate(plain.model.members):
        with torch.no_grad():
            p = torch.softmax(member(torch.from_numpy(data.x[folds == k])), dim=1).numpy()
        np.testing.assert_allclose(plain.oof_probabilities[folds == k], p, atol=1e-6)
    assert plain.oof()[0] == pytest.approx(
        float((plain.oof_probabilities.argmax(1) == data.y).mean())
    )
    assert [m.fold for m in plain.members] == [0, 1, 2]

    ckpt = tmp_path / "abc.pt"
    heard: list[tuple[int, int]] = []

    def crash_in_member_1(k: int, m: EpochMetrics) -> None:
        heard.append((k, m.epoch))
        if (k, m.epoch) == (1, 3):
            raise _Crash

    with pytest.raises(_Crash):
        fit_kfold(
            _head,
            data,
            folds,
            seed=5,
            fit_kwargs=FIT,
            tta=[],
            checkpoint=ckpt,
            on_epoch=crash_in_member_1,
        )
    assert member_paths(ckpt, 0)[1].exists() and not member_paths(ckpt, 0)[0].exists()
    assert member_paths(ckpt, 1)[0].exists() and not member_paths(ckpt, 1)[1].exists()

    heard.clear()
    restored: list[tuple[int, int]] = []
    retried = fit_kfold(
        _head,
        data,
        folds,
        seed=5,
        fit_kwargs=FIT,
        tta=[],
        checkpoint=ckpt,
        on_epoch=lambda k, m: heard.append((k, m.epoch)),
        on_restore=lambda k, history: restored.append((k, len(history))),
    )
    # Member 0 read back, member 1 on after its third (checkpointed) epoch, member 2 from the start.
    assert restored == [(0, 4), (1, 3)]
    assert heard == [(1, 4), (2, 1), (2, 2), (2, 3), (2, 4)]
    assert [m.restored for m in retried.members] == [True, False, False]
    assert retried.members[1].resumed_from == 4
    # The same ensemble as without the interruption.
    for a, b in zip(plain.model.members, retried.model.members):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, msg=name)
    np.testing.assert_allclose(retried.oof_probabilities, plain.oof_probabilities, atol=1e-6)
    remove_member_files(ckpt, 3)
    assert list(tmp_path.iterdir()) == []
