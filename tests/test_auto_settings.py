"""``auto`` precision and layout (srkit.hardware), their place in a run's written config, and
``srkit doctor``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from srkit import doctor, hardware
from srkit.config import validate_config
from srkit.train.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def avx2_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)


def test_auto_picks_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    choice = hardware.auto_precision(CPU)
    assert choice.value == "bf16" and "natively" in choice.reason
    assert hardware.auto_channels_last(CPU, "bf16").value is True
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    choice = hardware.auto_precision(CPU)
    assert choice.value == "fp32" and "emulated" in choice.reason
    assert hardware.auto_channels_last(CPU, "fp32").value is False


def test_auto_on_cuda_follows_the_compute_capability(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(hardware, "cuda_has_bf16", lambda device: True)
    assert hardware.auto_precision(gpu).value == "bf16"
    monkeypatch.setattr(hardware, "cuda_has_bf16", lambda device: False)
    assert hardware.auto_precision(gpu).value == "fp32"


def test_explicit_settings_are_kept():
    assert hardware.resolve_precision("fp16", CPU).value == "fp16"
    assert hardware.resolve_channels_last(False, CPU, "bf16").value is False
    assert hardware.resolve_channels_last(True, CPU, "fp32").value is True


def written_train_section(make_config, **train) -> tuple[Trainer, dict]:
    raw = make_config()
    raw["train"].update(train)
    trainer = Trainer(validate_config(raw), quiet=True)
    saved = yaml.safe_load((Path(raw["output_dir"]) / raw["name"] / "config.yml").read_text())
    return trainer, saved["train"]


@pytest.mark.parametrize(("probe", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_is_resolved_into_the_written_config(make_config, monkeypatch, probe, expected):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: probe)
    trainer, written = written_train_section(make_config, precision="auto", channels_last="auto")
    assert written["precision"] == expected
    assert written["channels_last"] is probe
    assert trainer.config.train.precision == expected  # what the step and validation use
    assert trainer.optimise.cfg.precision == expected


def test_auto_is_the_default(make_config, avx2_cpu):
    raw = make_config()
    raw["train"].pop("precision", None)
    raw["train"].pop("channels_last", None)
    config = validate_config(raw)
    assert config.train.precision == "auto" and config.train.channels_last == "auto"
    trainer = Trainer(config, quiet=True)
    assert trainer.config.train.precision == "fp32"


def test_auto_choice_and_reason_are_logged(make_config, avx2_cpu):
    raw = make_config()
    raw["train"].update(precision="auto", channels_last="auto", iterations=1)
    Trainer(validate_config(raw), quiet=True).run()
    text = (Path(raw["output_dir"]) / raw["name"] / "train.log").read_text()
    assert "precision fp32 (auto: the CPU has no bf16 instructions" in text
    assert "channels_last false (auto:" in text


def test_doctor_reports_the_machine_and_the_auto_choices(avx2_cpu):
    lines: list[str] = []
    doctor.report(seconds=0.2, write=lines.append)
    text = "\n".join(lines)
    assert "CPU:" in text and "oneDNN bf16: emulated" in text
    assert "GFLOP/s" in text and "bf16 =" in text
    assert "train.precision / upscale --precision: fp32 (the CPU has no bf16" in text


def test_doctor_says_when_the_benchmark_disagrees_with_the_probe(bf16_cpu, monkeypatch):
    monkeypatch.setattr(doctor, "conv_gflops", lambda d, p, s: 10.0 if p == "fp32" else 1.0)
    lines: list[str] = []
    doctor.report(seconds=1, write=lines.append)
    assert any("precision: bf16" in line for line in lines)
    assert any("found fp32 faster" in line for line in lines)


def test_doctor_command_runs(capsys):
    from srkit.cli import main

    assert main(["doctor", "--seconds", "0.2"]) == 0
    assert "auto picks on cpu" in capsys.readouterr().out


# ----------------------------------------------------------------------------- inference


def tiny_generator() -> torch.nn.Module:
    from srkit.nets.registry import build_network

    torch.manual_seed(0)
    model = build_network("rrdb", scale=2, nf=16, nb=2, gc=8)
    model.srkit_arch = {"type": "rrdb", "scale": 2, "nf": 16, "nb": 2, "gc": 8}
    return model.eval()


def photo(size: int = 24) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    channels = [0.5 + 0.4 * torch.sin(6 * x + k) * torch.cos(5 * y - k) for k in range(3)]
    return torch.stack(channels)[None].clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_prepared_bf16_model_stays_within_45_db_of_fp32():
    from srkit.infer.api import model_dtype, prepare_for_inference, upscale_tensor

    image = photo()
    reference, _ = upscale_tensor(tiny_generator(), image, tile=0, precision="fp32")
    fast = prepare_for_inference(tiny_generator(), precision="bf16", channels_last="auto")
    assert model_dtype(fast) == torch.bfloat16
    assert fast.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    output, _ = upscale_tensor(fast, image, tile=0)
    assert output.dtype == torch.float32 and output.shape == reference.shape
    assert not torch.equal(output, reference)  # it really ran in bf16 ...
    assert psnr(output, reference) >= 45  # ... within 45 dB of fp32
    tiled, _ = upscale_tensor(fast, image, tile=16, overlap=4)  # tiles take the same path
    assert psnr(tiled, reference) >= 45


def test_auto_inference_precision_follows_the_probe(monkeypatch):
    from srkit.infer.api import model_dtype, prepare_for_inference

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert model_dtype(prepare_for_inference(tiny_generator())) == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert model_dtype(prepare_for_inference(tiny_generator())) == torch.bfloat16


def test_upscale_command_defaults_to_auto(tmp_path, monkeypatch):
    from srkit.cli import build_parser

    args = build_parser().parse_args(["upscale", "m.safetensors", "in.png", "-o", str(tmp_path)])
    assert args.precision == "auto" and args.compile is False


# ----------------------------------------------------------------------------- DDP


def test_ddp_searches_for_unused_parameters_only_where_a_step_leaves_some(make_config):
    from srkit.train.build import may_leave_parameters_unused

    def unused(raw: dict, holds_back: bool = False) -> bool:
        trainer = Trainer(validate_config(raw), quiet=True)
        generator = trainer.networks["generator"]
        return may_leave_parameters_unused(
            trainer.config, "generator", generator, trainer.terms, holds_back, CPU
        )

    raw = make_config()
    assert unused(raw) is False  # RRDB: one output, read by the pixel term
    assert unused({**raw, "name": "held"}, holds_back=True) is True
    spsr = make_config(name="spsr")
    spsr["networks"]["generator"] = {"type": "spsr", "nf": 8, "nb": 4, "gc": 4}
    assert unused(spsr) is True  # grad_branch is read by no term: its output conv gets no grad
    spsr["name"] = "spsr_branch"
    spsr["losses"].append({"type": "branch_pixel", "weight": 1.0})
    assert unused(spsr) is False
