"""Discriminator health figures on cases with a known answer (srkit.losses.judgement and the
run's Health service)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from srkit.config import HealthConfig, validate_config
from srkit.losses.adversarial import GanTerm, GanTermConfig, PixganOptions
from srkit.losses.base import BuildContext
from srkit.losses.judgement import (
    Judgement,
    decision_logits,
    gradient_shares,
    judgement_figures,
    output_gradient_norms,
)
from srkit.losses.tensors import StepTensors
from srkit.train.trainer import Trainer


class Oracle(nn.Module):
    """A map discriminator that knows the answer: real images are all 1, fakes all 0, so the
    channel mean of a (swapped) image *is* its real-label map; D outputs it as +-8 logits at
    full resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 16 * x.mean(dim=1, keepdim=True) - 8


def pixgan_term(**options) -> GanTerm:
    config = GanTermConfig(gan_type="pixgan", pixgan=PixganOptions(**options))
    context = BuildContext(scale=2, device=torch.device("cpu"), networks={})
    return GanTerm(config, context)


def oracle_judgement(seed: int, **options) -> Judgement:
    term = pixgan_term(**options)
    tensors = StepTensors({"hr": torch.ones(6, 3, 64, 64), "sr": torch.zeros(6, 3, 64, 64)}, {})
    term.discriminator_loss(tensors, Oracle(), torch.Generator().manual_seed(seed))
    return term.judgement()


def test_an_oracle_map_discriminator_scores_iou_1_on_swapped_and_unswapped_images():
    # swap_probability 0.5 per image: both kinds of image occur in this draw.
    judgement = oracle_judgement(seed=3, swap_probability=0.5, max_swaps=4, min_size=8)
    swapped_images = (judgement.real_labels < 0.5).flatten(1).any(dim=1)
    assert 0 < int(swapped_images.sum()) < 6  # the test needs both kinds
    figures = judgement_figures([judgement])
    assert figures["swap_iou"] == 1.0
    assert figures["unswapped_iou"] == 1.0
    assert figures["accuracy"] == 1.0 and figures["acc_real"] == 1.0
    assert figures["logit_gap"] == pytest.approx(16.0)
    assert figures["swap_gap"] == pytest.approx(16.0)


def test_a_map_discriminator_blind_to_swaps_scores_low_swap_iou():
    """D judges each whole image by its side (ignores the rectangles): it points at nothing."""
    judgement = oracle_judgement(seed=3, swap_probability=1.0, max_swaps=4, min_size=8)
    blind = Judgement(
        torch.full_like(judgement.real, 8.0),
        torch.full_like(judgement.fake, -8.0),
        judgement.real_labels,
        judgement.fake_labels,
    )
    figures = judgement_figures([blind])
    assert figures["swap_iou"] == 0.0 and figures["swap_gap"] == 0.0
    assert 0.5 < figures["accuracy"] < 1.0


def test_a_constant_discriminator_has_gap_0_and_chance_accuracy():
    constant = Judgement(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    figures = judgement_figures([constant])
    assert figures["logit_gap"] == 0.0
    assert figures["p_real"] == 0.5 and figures["p_fake"] == 0.5
    assert figures["accuracy"] == 0.5
    assert "swap_iou" not in figures


def test_decision_logits_put_relativistic_and_least_squares_outputs_on_one_scale():
    real, fake = torch.tensor([3.0, 5.0]), torch.tensor([1.0, 1.0])
    relative_real, relative_fake = decision_logits("ragan", real, [fake])
    assert relative_real.tolist() == [2.0, 4.0] and relative_fake.tolist() == [-3.0, -3.0]
    squared_real, _ = decision_logits("lsgan", torch.tensor([0.5, 0.9]), [fake])
    assert torch.sigmoid(squared_real).tolist() == pytest.approx([0.5, 0.9])


def test_gradient_shares_match_a_hand_computed_two_term_case():
    torch.manual_seed(0)
    sr = torch.rand(2, 3, 4, 4, requires_grad=True)
    hr = torch.rand(2, 3, 4, 4)
    n = sr.numel()
    l1 = 0.5 * (sr - hr).abs().mean()  # weight 0.5: d/dsr = 0.5 sign / n, norm 0.5 / sqrt(n)
    l2 = 2.0 * (sr - hr).square().mean()  # weight 2: d/dsr = 4 (sr - hr) / n
    norms = output_gradient_norms({"l1": l1, "l2": l2}, [sr])
    expected_l1 = 0.5 / math.sqrt(n)
    expected_l2 = 4 * float((sr - hr).detach().norm()) / n
    assert float(norms["l1"]) == pytest.approx(expected_l1, rel=1e-5)
    assert float(norms["l2"]) == pytest.approx(expected_l2, rel=1e-5)
    shares = gradient_shares(norms)
    assert float(shares["l1"]) == pytest.approx(expected_l1 / (expected_l1 + expected_l2))
    assert float(sum(shares.values())) == pytest.approx(1.0)
    assert sr.grad is None  # measuring leaves the parameters' gradients alone


def test_output_gradient_norms_add_over_several_outputs():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(4, requires_grad=True)
    norms = output_gradient_norms({"both": a.sum() + 2 * b.sum(), "a": a.sum()}, [a, b])
    assert float(norms["both"]) == pytest.approx(math.sqrt(3 + 4 * 4))
    assert float(norms["a"]) == pytest.approx(math.sqrt(3))


def test_the_judge_warns_once_after_patience_logs():
    judge = judge_with(patience=2)
    healthy = {"logit_gap": 2.0, "accuracy": 0.8}
    collapsed = {"logit_gap": 0.01, "accuracy": 0.5}
    assert judge.warnings("d", collapsed, None) == []
    assert judge.warnings("d", healthy, None) == []  # the episode ends: count again
    assert judge.warnings("d", collapsed, None) == []
    [warning] = judge.warnings("d", collapsed, None)
    assert "'d' has collapsed" in warning and "helps" in warning
    assert judge.warnings("d", collapsed, None) == []  # once per episode


def test_the_judge_sees_a_winning_discriminator_only_when_its_share_vanishes():
    judge = judge_with(patience=1)
    perfect = {"logit_gap": 20.0, "accuracy": 1.0}
    assert judge.warnings("d", perfect, 0.2) == []  # G still gets its gradient
    assert judge.warnings("d", perfect, None) == []  # share not measured: no verdict
    [warning] = judge.warnings("d", perfect, 0.001)
    assert "wins outright" in warning


def test_a_map_discriminator_that_stops_pointing_gets_its_own_warning():
    judge = judge_with(patience=1)
    [warning] = judge.warnings("d", {"logit_gap": 3.0, "swap_gap": 0.0, "accuracy": 0.9}, None)
    assert "'d' does not point at the swapped regions" in warning and "helps" in warning
    # Collapsed outright: one warning, the collapse (not also "does not point").
    [warning] = judge_with(patience=1).warnings("d", {"logit_gap": 0.0, "swap_gap": 0.0}, None)
    assert "has collapsed" in warning


def judge_with(**changes):
    from srkit.train.services.health import HealthJudge

    return HealthJudge(HealthConfig(**changes))


def gan_run_config(make_config, **health) -> dict:
    raw = make_config()
    raw["data"]["train"]["patch_size"] = 32
    raw["networks"]["discriminator"] = {"type": "pixdisc", "nf": 4}
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0},
        {"type": "gan", "weight": 0.1, "gan_type": "pixgan"},
    ]
    raw["train"]["iterations"] = 4
    raw["logging"]["health"] = health
    return raw


def test_a_frozen_constant_discriminator_logs_gap_0_and_the_collapse_warning(make_config):
    raw = gan_run_config(make_config, patience=3, gradient_every=2)
    trainer = Trainer(validate_config(raw), quiet=True)
    with torch.no_grad():
        for parameter in trainer.networks["discriminator"].parameters():
            parameter.zero_()  # every logit 0 for any input
    trainer.optimizers["discriminator"].step = lambda *args, **kwargs: None  # frozen
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    health = [row for row in rows if "health/discriminator/logit_gap" in row]
    assert [row["step"] for row in health] == [1, 2, 3, 4]
    assert all(row["health/discriminator/logit_gap"] == 0.0 for row in health)
    assert all(row["health/discriminator/p_real"] == 0.5 for row in health)
    shares = [row for row in rows if "health/generator/share/gan" in row]
    assert [row["step"] for row in shares] == [1, 3]  # measured at steps 0 and 2
    for row in shares:
        total = row["health/generator/share/gan"] + row["health/generator/share/pixel"]
        assert total == pytest.approx(1.0)
    warnings = [line for line in (run / "train.log").read_text().splitlines() if "health:" in line]
    assert len(warnings) == 1 and "'discriminator' has collapsed" in warnings[0]


def test_shares_are_measured_only_when_several_terms_weigh(make_config):
    single = Trainer(validate_config(make_config()), quiet=True)
    assert single.optimise.output_gradient_every == 0  # one term: its share is 1
    raw = make_config()
    raw["losses"].append({"type": "pixel", "name": "l2", "criterion": "l2", "weight": 0.5})
    raw["logging"]["health"] = {"gradient_every": 7}
    assert Trainer(validate_config(raw), quiet=True).optimise.output_gradient_every == 7
    raw["logging"]["health"] = {"enabled": False}
    assert Trainer(validate_config(raw), quiet=True).optimise.output_gradient_every == 0


def test_the_judge_warns_when_the_colour_anchors_are_drowned_out():
    judge = judge_with(anchor_share=0.02)
    drowned = {"pixel": 0.0006, "perceptual": 0.9994}
    [warning] = [judge.anchor_warning(drowned, ["pixel"])]
    assert (
        warning is not None and "(pixel) have 0.06 %" in warning and "perceptual 99.9 %" in warning
    )
    assert judge.anchor_warning(drowned, ["pixel"]) is None  # once per episode
    assert judge.anchor_warning({"pixel": 0.06, "perceptual": 0.94}, ["pixel"]) is None
    assert judge.anchor_warning(drowned, ["pixel"]) is not None  # a new episode
    # Several anchors count together; none measured or none declared: no verdict.
    both = {"pixel": 0.015, "colour": 0.01, "perceptual": 0.975}
    assert judge_with().anchor_warning(both, ["pixel", "colour"]) is None
    assert judge_with().anchor_warning(drowned, []) is None
    assert judge_with(anchor_share=0).anchor_warning(drowned, ["pixel"]) is None


@pytest.mark.parametrize(
    ("term", "anchors"),
    [
        ({"type": "pixel"}, True),
        ({"type": "pixel", "input": "down(sr)", "target": "lr"}, True),
        ({"type": "pixel", "input": "grad(sr)", "target": "grad(hr)"}, False),
        ({"type": "pixel", "input": "detail(sr)", "target": "detail(hr)"}, False),
        ({"type": "colour"}, True),
        ({"type": "gan"}, False),
    ],
)
def test_terms_that_compare_images_anchor_colour(make_config, term, anchors):
    from srkit.nets import build_network
    from srkit.train.build import build_loss_terms

    raw = make_config()
    raw["networks"]["discriminator"] = {"type": "pixdisc", "nf": 4}
    raw["losses"] = [term]
    config = validate_config(raw)
    networks = {"discriminator": build_network("pixdisc", nf=4)}
    context = BuildContext(scale=config.scale, device=torch.device("cpu"), networks=networks)
    [built] = build_loss_terms(config, context)
    assert built.anchors_colour() is anchors


def test_a_run_whose_pixel_term_is_drowned_out_warns_at_the_first_measurement(make_config):
    raw = make_config()
    raw["losses"] = [
        {"type": "pixel", "weight": 1.0e-6},
        {"type": "pixel", "name": "edges", "input": "grad(sr)", "target": "grad(hr)"},
    ]
    raw["train"]["iterations"] = 2
    raw["logging"]["health"] = {"gradient_every": 1}
    Trainer(validate_config(raw), quiet=True).run()
    log = (Path(raw["output_dir"]) / raw["name"] / "train.log").read_text().splitlines()
    warnings = [line for line in log if "health:" in line]
    assert len(warnings) == 1 and "terms that hold colours (pixel)" in warnings[0]
    assert "edges" in warnings[0]
