"""Weight files: every accepted format round-trips; unsafe and damaged files are refused clearly."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import srkit
from srkit.errors import CheckpointError
from srkit.nets import build_network
from srkit.nets.rrdb import to_old_esrgan
from srkit.weights import read_weights, save_weights


def _rrdb(scale: int = 2, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("rrdb", scale=scale, nf=8, nb=2, gc=4, **kwargs).eval()


def _bsrgan_layout(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        key = key.replace("conv_body.", "trunk_conv.").replace("conv_hr.", "HRconv.")
        key = key.replace("conv_up", "upconv")
        if key.startswith("body."):
            _, index, rest = key.split(".", 2)
            key = f"RRDB_trunk.{index}." + rest.replace("rdb", "RDB")
        renamed[key] = value
    return renamed


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    image = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.allclose(a(image), b(image), atol=1e-6)


FORMATS = {
    "srkit safetensors": lambda m, d: save_weights(d / "g.safetensors", m) or d / "g.safetensors",
    "bare state dict .pth": lambda m, d: torch.save(m.state_dict(), d / "g.pth") or d / "g.pth",
    "bare state dict .pt": lambda m, d: torch.save(m.state_dict(), d / "g.pt") or d / "g.pt",
    "legacy (non-zip) torch file": lambda m, d: (
        torch.save(m.state_dict(), d / "g.pth", _use_new_zipfile_serialization=False) or d / "g.pth"
    ),
    "old ESRGAN layout .pth": lambda m, d: (
        torch.save(to_old_esrgan(m.state_dict()), d / "o.pth") or d / "o.pth"
    ),
    "BSRGAN layout .pth": lambda m, d: (
        torch.save(_bsrgan_layout(m.state_dict()), d / "b.pth") or d / "b.pth"
    ),
    "DDP prefix": lambda m, d: (
        torch.save({f"module.{k}": v for k, v in m.state_dict().items()}, d / "ddp.pth")
        or d / "ddp.pth"
    ),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip(tmp_path: Path, name: str):
    model = _rrdb()
    loaded = srkit.load_model(FORMATS[name](model, tmp_path))
    assert loaded.scale == 2 and loaded.srkit_arch["nb"] == 2
    assert _same_outputs(model, loaded)


def test_bare_safetensors_without_srkit_metadata_is_detected(tmp_path):
    from safetensors.torch import save_file

    model = _rrdb(scale=4)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "x.safetensors")
    )
    loaded = srkit.load_model(tmp_path / "x.safetensors")
    assert loaded.scale == 4 and _same_outputs(model, loaded)


def test_basicsr_wrapper_prefers_the_ema_weights(tmp_path):
    raw, ema = _rrdb(), _rrdb()
    with torch.no_grad():
        for parameter in ema.parameters():
            parameter.add_(0.01)
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "b.pth")
    assert _same_outputs(ema, srkit.load_model(tmp_path / "b.pth"))
    torch.save({"params": raw.state_dict()}, tmp_path / "p.pth")
    assert _same_outputs(raw, srkit.load_model(tmp_path / "p.pth"))


def test_checkpoint_folder_prefers_the_ema_generator(tmp_path):
    raw, ema = _rrdb(), _rrdb()
    with torch.no_grad():
        for parameter in ema.parameters():
            parameter.add_(0.01)
    folder = tmp_path / "step_00000010"
    folder.mkdir()
    save_weights(folder / "generator.safetensors", raw)
    save_weights(folder / "generator_ema.safetensors", ema)
    loaded = srkit.load_model(folder)
    assert _same_outputs(ema, loaded)
    assert loaded.srkit_metadata["source"].endswith("generator_ema.safetensors")


@pytest.mark.parametrize("kind", ["spsr", "srg2"])
def test_other_generators_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    options = {
        "spsr": {"nf": 8, "nb": 4, "gc": 4},
        "srg2": {"nf": 8, "depth": 1, "transforms": 2, "mux_filters": 8, "temperature": 1.0},
    }
    model = build_network(kind, scale=2, **options[kind]).eval()
    torch.save(model.state_dict(), tmp_path / "g.pth")
    loaded = srkit.load_model(tmp_path / "g.pth")
    image = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model(image)["sr"], loaded(image)["sr"], atol=1e-6)


class _RunsCode:
    """Unpickling this object calls ``os.system`` (the classic malicious checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle protocol 2", "raw pickle protocol 4"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = {"conv_first.weight": torch.zeros(1), "evil": _RunsCode(marker)}
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    with pytest.raises(CheckpointError) as caught:
        srkit.load_model(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists()
    if how == "torch.save":
        assert "could run code" in message


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_truncated_file_gives_one_line(tmp_path, suffix):
    model = _rrdb()
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), whole)
    else:
        save_weights(whole, model)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        srkit.load_model(cut)
    message = str(caught.value)
    assert str(cut) in message and "\n" not in message and len(message) < 400
    assert f"cannot read weights file '{cut}': it is a " in message
    assert "cut short" in message


def _zip_of(path: Path, names: list[str]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, "x")


def _legacy_pickle(path: Path) -> None:
    torch.save(_rrdb().state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:300])


def _photo(path: Path, suffix: str) -> None:
    from PIL import Image

    image = Image.new("RGB", (16, 16), (200, 10, 10))
    image.save(path.with_suffix(suffix))
    path.write_bytes(path.with_suffix(suffix).read_bytes())


NOT_WEIGHTS = [
    ("png", lambda p: _photo(p, ".png"), "it is a PNG image"),
    ("jpeg", lambda p: _photo(p, ".jpg"), "it is a JPEG image"),
    ("webp", lambda p: _photo(p, ".webp"), "it is a WebP image"),
    ("bmp", lambda p: _photo(p, ".bmp"), "it is a BMP image"),
    ("tiff", lambda p: _photo(p, ".tif"), "it is a TIFF image"),
    (
        "text",
        lambda p: p.write_text("\n  model: rrdb\nnf: 64\n"),
        "it is text, starting 'model: rrdb'",
    ),
    ("html", lambda p: p.write_text("<!DOCTYPE html><html>Not Found</html>"), "it is an HTML page"),
    (
        "lfs",
        lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
        "it is a Git LFS pointer",
    ),
    (
        "gzip",
        lambda p: p.write_bytes(__import__("gzip").compress(b"weights")),
        "it is gzip-compressed",
    ),
    (
        "zip",
        lambda p: _zip_of(p, ["notes.txt", "b.txt"]),
        "it is a zip archive of 2 files, e.g. 'notes.txt'",
    ),
    (
        "binary",
        lambda p: p.write_bytes(bytes(range(7, 250))),
        "it is 243 bytes of unrecognised binary data",
    ),
]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(("kind", "make", "looks"), NOT_WEIGHTS, ids=[c[0] for c in NOT_WEIGHTS])
def test_a_file_that_is_not_weights_says_what_it_is(tmp_path, kind, make, looks, suffix):
    path = tmp_path / f"model{suffix}"
    make(path)
    with pytest.raises(CheckpointError) as caught:
        read_weights(path)
    message = str(caught.value)
    assert message.startswith(f"'{path}' is not a weights file: {looks}"), message
    assert message.endswith(
        "expected a .safetensors file, a PyTorch state dict (.pth, .pt, "
        ".ckpt, .bin) or an srkit checkpoint folder"
    ), message
    assert "\n" not in message


DAMAGED = [
    ("old-format pickle", ".pth", _legacy_pickle, "a pickle (PyTorch's pre-1.6 format) that"),
    (
        "zip",
        ".pth",
        lambda p: (torch.save(_rrdb().state_dict(), p), p.write_bytes(p.read_bytes()[:900])),
        "a zip archive that is damaged or cut short",
    ),
    (
        "safetensors header",
        ".safetensors",
        lambda p: (save_weights(p, _rrdb()), p.write_bytes(p.read_bytes()[:60])),
        "a safetensors file cut short (its header alone needs",
    ),
    (
        "safetensors data",
        ".safetensors",
        lambda p: (save_weights(p, _rrdb()), p.write_bytes(p.read_bytes()[:-10])),
        "a safetensors file cut short (its header says",
    ),
]


@pytest.mark.parametrize(("kind", "suffix", "make", "looks"), DAMAGED, ids=[c[0] for c in DAMAGED])
def test_damaged_weights_say_how(tmp_path, kind, suffix, make, looks):
    path = tmp_path / f"model{suffix}"
    make(path)
    with pytest.raises(CheckpointError) as caught:
        read_weights(path)
    assert str(caught.value).startswith(f"cannot read weights file '{path}': it is {looks}")


def test_an_architecture_record_out_of_range_names_the_file(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    save_weights(tmp_path / "g.safetensors", _rrdb())
    arch = {"type": "rrdb", "scale": 2, "nf": -8, "nb": 2, "gc": 4}
    save_file(
        load_file(tmp_path / "g.safetensors"),
        tmp_path / "bad.safetensors",
        metadata={"srkit_arch": json.dumps(arch)},
    )
    with pytest.raises(CheckpointError) as caught:
        srkit.load_model(tmp_path / "bad.safetensors")
    assert str(caught.value) == (
        f"'{tmp_path / 'bad.safetensors'}': its architecture record does not fit this srkit "
        "(rrdb: nf: must be greater than 0, got -8)"
    )


def test_safetensors_under_another_name_loads(tmp_path):
    save_weights(tmp_path / "g.safetensors", _rrdb())
    renamed = tmp_path / "g.pth"
    renamed.write_bytes((tmp_path / "g.safetensors").read_bytes())
    assert _same_outputs(srkit.load_model(renamed), _rrdb())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n an image, not weights", "is not a weights file: it is a PNG image"),
        (None, "do not match any known architecture"),
        ("wrapped", "holds no network weights"),
    ],
)
def test_foreign_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "thing.pth"
    if content is None:
        torch.save({"some.other.weight": torch.zeros(3, 3)}, path)
    elif content == "wrapped":
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as caught:
        srkit.load_model(path)
    assert "\n" not in str(caught.value)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        srkit.load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="folder without"):
        srkit.load_model(tmp_path)


def test_read_weights_keeps_metadata(tmp_path):
    save_weights(tmp_path / "g.safetensors", _rrdb(), {"step": "5"})
    state, metadata = read_weights(tmp_path / "g.safetensors")
    assert metadata["step"] == "5" and "srkit_arch" in metadata
    assert "conv_first.weight" in state
