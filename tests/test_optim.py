"""Optimiser groups, learning-rate schedule and EMA against hand-computed values (fact sheet D.5)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rtmkit import get_config
from rtmkit.engine.ema import ExpMomentumEMA
from rtmkit.engine.optim import FlatCosineSchedule, build_optimizer, param_groups, scaled_lr
from rtmkit.models.detector import RTMDetNet


def test_param_groups_no_decay_on_norms_and_biases_shared_once():
    net = RTMDetNet(get_config("rtmdet-tiny"))
    decay, no_decay = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(names[id(p)].endswith("conv.weight") or names[id(p)].endswith("fc.weight")
               or ".rtm_" in names[id(p)] and names[id(p)].endswith("weight") for p in decay["params"])
    assert all(names[id(p)].endswith((".bias", "bn.weight")) for p in no_decay["params"])
    n_unique = len(list(net.parameters()))
    assert len(decay["params"]) + len(no_decay["params"]) == n_unique
    # the conv shared by the three head levels is optimised once
    shared = net.bbox_head.cls_convs[0][0].conv.weight
    assert sum(p is shared for p in decay["params"]) == 1
    opt = build_optimizer(net, lr=0.001)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.param_groups[0]["lr"] == 0.001


def test_lr_scaling_rule():
    assert scaled_lr(256) == 0.004 and scaled_lr(32) == pytest.approx(0.0005) and scaled_lr(16) == 0.00025


def test_flat_cosine_schedule_hand_computed():
    s = FlatCosineSchedule(lr=0.004, max_epochs=300, iters_per_epoch=100)
    assert s.lr_at(0) == pytest.approx(0.004 * 1e-5)
    assert s.lr_at(500) == pytest.approx(0.004 * (1e-5 + (1 - 1e-5) * 0.5))
    assert s.lr_at(1000) == 0.004 and s.lr_at(14999) == 0.004  # flat until epoch 150
    assert s.lr_at(15000) == pytest.approx(0.004)  # cosine starts at its maximum
    assert s.lr_at(15000 + 7500) == pytest.approx(0.0002 + (0.004 - 0.0002) / 2)  # halfway: mean of max and min
    assert s.lr_at(30000) == pytest.approx(0.0002)  # eta_min = 5 % at the end
    t = 3000
    assert s.lr_at(15000 + t) == pytest.approx(0.0002 + 0.0038 * (1 + math.cos(math.pi * t / 15000)) / 2)
    short = FlatCosineSchedule(lr=0.01, max_epochs=4, iters_per_epoch=10)
    assert short.warmup_iters == 13  # capped at a third of the 40 iterations
    assert short.lr_at(39) > short.lr_at(40) == pytest.approx(0.0005)


def test_exp_momentum_ema_hand_computed():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=2000)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update(model)  # first update copies
    assert torch.equal(ema.module[0].weight, model[0].weight)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)  # steps = 1
    m = (1 - 0.0002) * math.exp(-2 / 2000) + 0.0002
    assert ema.module[0].weight[0, 0].item() == pytest.approx(1.0 * (1 - m) + 3.0 * m)
    assert ema.module[1].running_mean[0].item() == pytest.approx(2.0 * (1 - m) + 4.0 * m)  # buffers averaged
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers copied
    state = ema.state_dict()
    other = ExpMomentumEMA(model)
    other.load_state_dict(state)
    assert other.steps == 2 and torch.equal(other.module[0].weight, ema.module[0].weight)
    assert ema.momentum_at(10**7) == pytest.approx(0.0002)
