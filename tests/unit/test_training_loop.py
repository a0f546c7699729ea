"""The training loop's options: optimizers, schedules, losses, augmentation, accumulation, checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from testkit import left_right_split
from visionops.core.config import AugmentConfig, PipelineConfig, TrainConfig
from visionops.models import build_model
from visionops.models.wrappers import NormalizedNet
from visionops.training.augment import augment_batch, build_augment
from visionops.training.checkpoint import load_checkpoint
from visionops.training.engine import EpochMetrics, FitOptions, fit
from visionops.training.losses import FocalLoss, balanced_class_weights, make_loss
from visionops.training.optim import make_optimizer, make_scheduler
from visionops.training.settings import apply_params, current_params, fit_options

CPU = torch.device("cpu")


_separable = left_right_split  # two classes: bright left half (0) or right half (1), with noise


def _net(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return NormalizedNet(
        build_model("small_cnn", in_channels=1, image_size=8, num_classes=2, dropout=dropout),
        [0.3],
        [0.3],
    )


def _fit(model: nn.Module, options: FitOptions | None = None, **kw):
    args = dict(
        max_epochs=3,
        batch_size=16,
        learning_rate=3e-3,
        weight_decay=0.0,
        patience=5,
        seed=1,
        device=CPU,
    )
    args.update(kw)
    return fit(model, _separable(64, 0), _separable(32, 1), options=options, **args)


@pytest.mark.parametrize(
    "options",
    [
        FitOptions(train=TrainConfig(optimizer="adam", scheduler="cosine")),
        FitOptions(
            train=TrainConfig(
                optimizer="sgd", nesterov=True, scheduler="step", step_size=1, gamma=0.5
            )
        ),
        FitOptions(train=TrainConfig(loss="focal", class_weights="balanced", label_smoothing=0.1)),
        # No flips: this task is left bright vs right bright.
        FitOptions(
            train=TrainConfig(
                augment=AugmentConfig(strength=0.5, crop="resized"), accumulate_steps=2
            )
        ),
    ],
)
def test_every_option_combination_learns(options: FitOptions) -> None:
    lr = 0.05 if options.train.optimizer == "sgd" else 3e-3
    result = _fit(_net(), options, max_epochs=4, learning_rate=lr)
    assert result.best_val_accuracy >= 0.9, options
    if options.train.scheduler == "step":
        assert [m.learning_rate for m in result.history] == pytest.approx(
            [0.05, 0.025, 0.0125, 0.00625]
        )
    if options.train.scheduler == "cosine":
        assert result.history[-1].learning_rate < result.history[0].learning_rate


def test_sgd_momentum_and_nesterov_reach_the_optimizer() -> None:
    opt = make_optimizer(
        nn.Linear(2, 2), "sgd", lr=0.1, weight_decay=0.0, momentum=0.8, nesterov=True
    )
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["nesterov"] is True
    plateau = make_scheduler(opt, "plateau", max_epochs=5, patience=2)
    assert plateau.mode == "max" and plateau.factor == pytest.approx(0.1)


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(model, "adamw", lr=0.1, weight_decay=0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == 3


def test_focal_loss_and_class_weights() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5]])
    target = torch.tensor([0, 1])
    ce = nn.functional.cross_entropy(logits, target, reduction="none")
    focal = FocalLoss(gamma=2.0)(logits, target)
    p = torch.softmax(logits, 1)[[0, 1], [0, 1]]
    assert focal.item() == pytest.approx(((1 - p) ** 2 * ce).mean().item())
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(
        ce.mean().item()
    )  # gamma 0 is CE
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    assert isinstance(make_loss("cross_entropy", label_smoothing=0.1), nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="train.loss"):
        make_loss("hinge")


def test_augmentation_is_per_image_uint8_and_off_at_strength_zero() -> None:
    assert build_augment(AugmentConfig(strength=0.0), 1, 16, 16) is None
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    t = build_augment(AugmentConfig(strength=1.0, hflip=True, crop="pad"), 3, 16, 16)
    out = augment_batch(t, x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    changed = [not torch.equal(a, b) for a, b in zip(out, x)]
    assert sum(changed) >= 12  # (almost) every image changed ...
    diffs = {(a.int() - b.int()).abs().sum().item() for a, b in zip(out, x)}
    assert len(diffs) > 8  # ... each in its own way


def test_augmentation_touches_only_the_training_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionops.training import engine

    seen: list[int] = []
    real = engine.augment_batch

    def spy(transform, x):  # noqa: ANN001, ANN202
        seen.append(len(x))
        return real(transform, x)

    monkeypatch.setattr(engine, "augment_batch", spy)
    _fit(_net(), FitOptions(train=TrainConfig(augment=AugmentConfig(strength=0.5))), max_epochs=1)
    assert sum(seen) == 64  # the 64 training images, none of the 32 validation images


def test_gradient_accumulation_equals_a_larger_batch() -> None:
    """Two accumulated batches of 8 give the same step as one batch of 16 (no dropout, no batch norm)."""
    x = torch.from_numpy(_separable(16, 0).x)
    y = torch.from_numpy(_separable(16, 0).y)
    from visionops.training.engine import fit_one_epoch

    a, b = _net(dropout=0.0), _net(dropout=0.0)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    fit_one_epoch(a, x, y, opt_a, nn.CrossEntropyLoss(), 16, torch.Generator().manual_seed(0))
    fit_one_epoch(
        b,
        x,
        y,
        opt_b,
        nn.CrossEntropyLoss(),
        8,
        torch.Generator().manual_seed(0),
        options=FitOptions(train=TrainConfig(accumulate_steps=2)),
    )
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    """Stopped after epoch 2 of 5 and started again: 5 epochs in all, the same curve as an unbroken run."""
    options = FitOptions(train=TrainConfig(augment=AugmentConfig(strength=0.3), scheduler="cosine"))
    whole = _fit(_net(), options, max_epochs=5, patience=10)
    ckpt = tmp_path / "run" / "last.pt"

    def crash_after_2(m: EpochMetrics) -> None:
        if m.epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _fit(_net(), options, max_epochs=5, patience=10, checkpoint=ckpt, on_epoch=crash_after_2)
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    assert not list(ckpt.parent.glob(".*.tmp"))  # written atomically: no temporary left behind
    later: list[int] = []
    # A fresh process would build a fresh model: different initial weights must not matter.
    resumed = _fit(
        _net(seed=99),
        options,
        max_epochs=5,
        patience=10,
        checkpoint=ckpt,
        on_epoch=lambda m: later.append(m.epoch),
    )
    assert resumed.resumed_from == 3 and later == [3, 4, 5]
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
        assert [getattr(m, key) for m in resumed.history] == pytest.approx(
            [getattr(m, key) for m in whole.history], rel=1e-5
        ), key
    for k, v in whole.model.state_dict().items():
        assert torch.allclose(v.float(), resumed.model.state_dict()[k].float(), atol=1e-5), k


def test_finished_checkpoint_does_not_train_again(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.pt"
    first = _fit(_net(), max_epochs=2, checkpoint=ckpt)
    again = _fit(
        _net(seed=5), max_epochs=2, checkpoint=ckpt, on_epoch=lambda m: pytest.fail("retrained")
    )
    assert [m.val_loss for m in again.history] == [m.val_loss for m in first.history]
    assert again.best_val_accuracy == first.best_val_accuracy


def test_config_to_options_and_tuned_params() -> None:
    cfg = apply_params(
        PipelineConfig(),
        {
            "optimizer": "sgd",
            "augment_strength": 0.4,
            "width": 0.5,
            "label_smoothing": 0.1,
            "batch_size": 32,
        },
    )
    opts = fit_options(cfg)
    assert (opts.train.optimizer, opts.train.augment.strength, opts.train.label_smoothing) == (
        "sgd",
        0.4,
        0.1,
    )
    assert opts.train is cfg.train  # the config itself, not a copy of its fields
    assert cfg.model.width == 0.5 and cfg.train.batch_size == 32
    assert current_params(cfg)["optimizer"] == "sgd"
    assert replace(opts, train=opts.train.model_copy(update={"amp": False})).train.amp is False
    with pytest.raises(ValueError, match="unknown tuned parameters \\['momentum_x'\\]"):
        apply_params(PipelineConfig(), {"momentum_x": 1})


def test_faces_weight_balancing_samples_every_class_equally():
    import torch

    from visionops.core.config import build_config
    from visionops.training.engine import training_batches
    from visionops.training.settings import fit_options

    assert (
        fit_options(build_config({"faces": {"enabled": True, "balance": "weights"}})).sampling
        == "balanced"
    )
    assert (
        fit_options(build_config({"faces": {"enabled": True, "balance": "downsample"}})).sampling
        == "uniform"
    )
    assert fit_options(build_config({})).sampling == "uniform"
    y = torch.tensor([0] * 900 + [1] * 100)  # 9:1 imbalance
    uniform = torch.cat(training_batches(y, 64, torch.Generator().manual_seed(0)))
    assert sorted(uniform.tolist()) == list(range(1000))  # a plain pass sees every image once
    drawn = torch.cat(training_batches(y, 64, torch.Generator().manual_seed(0), "balanced"))
    assert len(drawn) == 1000
    share_small = float((y[drawn] == 1).double().mean())
    assert 0.4 < share_small < 0.6, share_small  # about half, against 0.1 in the data


# -- mixed precision ------------------------------------------------------------------------------

from visionops.training.checkpoint import restore_scaler  # noqa: E402
from visionops.training.precision import choose_precision, grad_scaler, resolve_precision  # noqa: E402


@pytest.mark.parametrize(
    ("device_type", "amp", "bf16", "expected"),
    [
        ("cuda", True, True, "bf16"),
        ("cuda", True, False, "fp16"),  # older GPUs: fp16 with loss scaling instead of fp32
        ("cuda", False, True, "fp32"),
        ("cuda", False, False, "fp32"),
        ("cpu", True, True, "fp32"),
        ("cpu", True, False, "fp32"),
        ("mps", True, True, "fp32"),
    ],
)
def test_choose_precision(device_type: str, amp: bool, bf16: bool, expected: str) -> None:
    assert choose_precision(device_type, amp, bf16) == expected


def test_resolve_precision_asks_the_gpu_about_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: the CUDA answer is checked by logic, with the bf16 query stubbed.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision(torch.device("cuda"), amp=True) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(torch.device("cuda"), amp=True) == "bf16"
    assert resolve_precision(CPU, amp=True) == "fp32"
    assert resolve_precision(CPU, amp=True, forced="fp16") == "fp16"
    with pytest.raises(ValueError, match="precision must be 'auto' or one of"):
        resolve_precision(CPU, amp=True, forced="fp8")
    assert grad_scaler(CPU, "fp16").is_enabled() and not grad_scaler(CPU, "bf16").is_enabled()


def _fp16_step(
    scaler: torch.amp.GradScaler, accumulate: int, batches: int = 4
) -> tuple[nn.Module, list]:
    from visionops.training.engine import fit_one_epoch

    data = _separable(4 * batches, 0)
    model = _net(dropout=0.0)
    dtypes: list[torch.dtype] = []
    model.net.classifier[-1].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit_one_epoch(
        model,
        torch.from_numpy(data.x),
        torch.from_numpy(data.y),
        opt,
        nn.CrossEntropyLoss(),
        4,
        torch.Generator().manual_seed(0),
        options=FitOptions(train=TrainConfig(accumulate_steps=accumulate), precision="fp16"),
        scaler=scaler,
    )
    return model, dtypes


def test_fp16_scaler_updates_once_per_optimizer_step_with_accumulation() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    model, dtypes = _fp16_step(scaler, accumulate=2, batches=4)
    assert set(dtypes) == {torch.float16}  # fp16 autocast ran
    # 4 batches, 2 per step: 2 optimizer steps, each counted once by the scaler (no overflow at 2**10).
    assert scaler.state_dict()["_growth_tracker"] == 2 and scaler.get_scale() == 2.0**10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_overflow_skips_the_step_and_backs_off_the_scale() -> None:
    # A scale of 2**40 overflows fp16 gradients: the scaled loss reached backward, the step is skipped.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    before = {k: v.clone() for k, v in _net(dropout=0.0).state_dict().items()}
    model, _ = _fp16_step(scaler, accumulate=4, batches=4)
    assert scaler.get_scale() == 2.0**39
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fit_with_fp16_loss_scaling_learns_and_checkpoints_the_scaler(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.pt"
    result = _fit(
        _net(),
        FitOptions(train=TrainConfig(accumulate_steps=2), precision="fp16"),
        max_epochs=3,
        checkpoint=ckpt,
    )
    assert result.precision == "fp16"
    assert result.best_val_accuracy >= 0.9
    saved = load_checkpoint(ckpt)
    assert saved["scaler"]["scale"] > 0  # saved by an enabled scaler (a disabled one saves {})
    assert _fit(_net(), max_epochs=1).precision == "fp32"  # CPU default: amp is for CUDA only


def test_restore_scaler_continues_with_the_saved_scale() -> None:
    saved = torch.amp.GradScaler("cpu", init_scale=512.0).state_dict()
    resumed = torch.amp.GradScaler("cpu")
    restore_scaler(resumed, saved)
    assert resumed.get_scale() == 512.0
    restore_scaler(resumed, {})  # a checkpoint from a bf16/fp32 run: nothing to restore
    restore_scaler(resumed, None)  # a checkpoint from before scalers were saved
    assert resumed.get_scale() == 512.0
    disabled = grad_scaler(CPU, "fp32")
    restore_scaler(disabled, saved)  # now training without fp16: the saved scale does not apply
    assert not disabled.is_enabled()


def test_interrupted_fp16_run_resumes_with_its_loss_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionops.training import engine

    scalers: list[torch.amp.GradScaler] = []

    def spy(device, precision):  # noqa: ANN001, ANN202 - fit's scaler, at a scale that never overflows here
        scalers.append(
            torch.amp.GradScaler(device.type, init_scale=2.0**7, enabled=precision == "fp16")
        )
        return scalers[-1]

    monkeypatch.setattr(engine, "grad_scaler", spy)
    ckpt = tmp_path / "last.pt"
    options = FitOptions(precision="fp16")

    def crash_after_1(m: EpochMetrics) -> None:
        if m.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _fit(_net(), options, max_epochs=3, patience=10, checkpoint=ckpt, on_epoch=crash_after_1)
    saved = load_checkpoint(ckpt)["scaler"]
    assert saved["scale"] == 2.0**7 and saved["_growth_tracker"] == 4  # 64 images / 16: four steps
    resumed = _fit(_net(seed=9), options, max_epochs=3, patience=10, checkpoint=ckpt)
    assert resumed.resumed_from == 2
    # The resumed scaler went on counting from the checkpoint: 4 steps before, 8 after.
    assert scalers[-1].state_dict()["_growth_tracker"] == 4 + 8
