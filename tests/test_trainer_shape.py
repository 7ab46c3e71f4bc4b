"""The trainer's shape (docs/architecture.md): files a reader can hold in their head, a loop that
knows no method by name, and services that are added without touching the loop."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import srkit.losses
import srkit.nets
from srkit.config import validate_config
from srkit.losses.base import loss_entries
from srkit.nets.registry import network_names
from srkit.train.services import SERVICES, Service
from srkit.train.trainer import Trainer

TRAIN = Path(srkit.__file__).parent / "train"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def python_files() -> list[Path]:
    files = sorted(TRAIN.rglob("*.py"))
    assert len(files) > 10 and TRAIN / "step.py" in files
    return files


def test_no_train_file_or_function_is_too_long():
    too_long = []
    for file in python_files():
        source = file.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{file.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{file.name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def code_words(source: str) -> set[str]:
    """Identifiers and string literals of a module, docstrings left out (a comment or a
    docstring may give a method as an example; code may not branch on one)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            words.add(node.name)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            words.add(node.value)
    return {word.lower() for word in words}


def test_the_loop_names_no_method_network_or_term_type():
    methods = {"spsr", "pixgan", "srg2", "esrgan", "ragan", "lsgan", "hinge"}
    names = set(loss_entries()) | set(network_names()) | methods
    assert {"rrdb", "pixel", "gan", "perceptual", "vgg"} <= names
    found = []
    for file in python_files():
        if file.name == "build.py":  # turns the config into parts: it may word advice by type
            continue
        for word in code_words(file.read_text()):
            for name in names:
                if re.search(rf"(?<![a-z0-9_]){re.escape(name)}(?![a-z0-9_])", word):
                    found.append(f"{file.relative_to(TRAIN)}: {name!r} in {word!r}")
    assert not found, found


def test_code_words_sees_code_and_skips_docstrings():
    """The check above must see a type named in code (else it would pass vacuously)."""
    words = code_words('"""A pixgan example."""\nif kind == "pixgan":\n    spsr_step()\n')
    assert "pixgan" in words and "spsr_step" in words and "a pixgan example." not in words


class ValidationJournal(Service):
    """A new service as a user would write one: a JSON line for every validation."""

    def after_validation(self, run, metrics):
        with (run.run_dir / "validations.jsonl").open("a") as file:
            file.write(json.dumps({"step": run.step, **metrics}) + "\n")


def test_a_service_is_added_without_touching_the_loop(make_config):
    raw = make_config(train__iterations=4, logging__val_every=2)
    trainer = Trainer(validate_config(raw), quiet=True, services=[*SERVICES, ValidationJournal])
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]
    journal = [json.loads(line) for line in (run / "validations.jsonl").read_text().splitlines()]
    assert [row["step"] for row in journal] == [2, 4]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validations = [row for row in logged if "val/psnr_y" in row]
    assert [row["step"] for row in validations] == [2, 4]
    for written, row in zip(journal, validations, strict=True):
        assert written["val/psnr_y"] == row["val/psnr_y"]


def test_the_default_services_are_the_registered_ones(make_config):
    trainer = Trainer(validate_config(make_config()), quiet=True)
    assert [type(service) for service in trainer.services.items] == SERVICES
