"""Every command in the cards, the README and the docs runs as written, in order.

The shell blocks of ``solvers/*/card.md``, ``datasets/*/card.md``, ``README.md`` and the
``docs/*.rst`` pages are read line by line, without running anything heavy:

- ``physnet ...`` (also under ``torchrun -m physnet.cli`` and ``physnet bench``): the
  subcommand exists and its parser accepts the arguments; a ``train`` configuration, a
  ``generate`` dataset and their ``--set`` overrides load; a model is a pretrained name or
  a checkpoint an earlier ``train`` wrote;
- ``python SCRIPT ...``: the script is in the repository and its parser accepts the
  arguments (the script runs up to ``parse_args`` and stops there);
- an input under ``$PHYSNET_DATA/`` or ``runs/`` (a command's data file, a ``train.toml``'s
  ``[data]`` files, ``cp``'s source, a benchmark's prerequisite) is written by an earlier
  command of the same document, so a newcomer who runs the commands in order on a fresh
  clone never meets a missing file.
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from physnet._toml import load_toml
from physnet.cli import build_parser
from physnet.datasets.generate import available_generators, plan_generation
from physnet.training import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [
        *ROOT.glob("solvers/*/card.md"),
        *ROOT.glob("datasets/*/card.md"),
        ROOT / "README.md",
        *ROOT.glob("docs/*.rst"),
    ]
)
SHELLS = ("sh", "bash", "shell", "console")
PRETRAINED = {
    entry["name"] for entry in json.loads((ROOT / "physnet/pretrained/manifest.json").read_text())
}
# Inputs that scripts read by default (not visible on their command lines): a document that
# runs the script must produce them first.
SCRIPT_INPUTS = {
    "benchmarks/wave.py": ("$PHYSNET_DATA/wave2d-rollout.h5",),
}
SKIPPED = {"cd", "cp", "export", "git", "mkdir", "pip", "source", "make", "ls", "du", "rm"}
MAKE_TARGETS = set(
    re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
)


def shell_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the shell code blocks of a Markdown or rst document."""
    lines = path.read_text().splitlines()
    blocks = []
    if path.suffix == ".md":
        start = None
        for number, line in enumerate(lines, 1):
            fence = re.match(r"^\s*```\s*(\w*)", line)
            if fence and start is None:
                start = number if fence.group(1) in SHELLS else -number
                body = []
            elif fence:
                if start > 0:
                    blocks.append((start, "\n".join(body)))
                start = None
            elif start is not None:
                body.append(line)
    else:
        number = 0
        while number < len(lines):
            directive = re.match(r"^(\s*)\.\. code-block:: (\w+)", lines[number])
            number += 1
            if not directive or directive.group(2) not in SHELLS:
                continue
            indent, start, body = len(directive.group(1)), number, []
            while number < len(lines) and (
                not lines[number].strip()
                or len(lines[number]) - len(lines[number].lstrip()) > indent
            ):
                body.append(lines[number])
                number += 1
            blocks.append((start, "\n".join(body)))
    return blocks


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """``(where, words)`` of every command line of the document's shell blocks, in order."""
    found = []
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for start, text in shell_blocks(path):
        logical = re.sub(r"\\\n", " ", text)  # continuation lines
        for offset, line in enumerate(logical.splitlines()):
            where = f"{name}:{start + offset}: {line.strip()}"
            words = shlex.split(line, comments=True)
            while words:  # `a && b` and `a ; b` are two commands
                cut = next((i for i, w in enumerate(words) if w in ("&&", ";")), len(words))
                command, words = words[:cut], words[cut + 1 :]
                while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):  # VAR=value
                    command = command[1:]
                if command:
                    found.append((where, command))
    return found


class _Parsed(Exception):
    """Raised by the patched ``parse_args``: the arguments parsed, the script stops."""


@dataclass
class Document:
    """What the commands of one document have produced so far."""

    where: str = ""
    produced: set[str] = field(default_factory=set)

    def need(self, path: str, what: str) -> None:
        path = path.replace("${PHYSNET_DATA}", "$PHYSNET_DATA").rstrip("/")
        if not path.startswith(("$PHYSNET_DATA/", "runs/")):
            return
        assert path in self.produced, (
            f"{self.where}\n  {what} {path} is not produced by an earlier command of the "
            f"document (add the command that makes it, before this one); produced so far: "
            f"{sorted(self.produced) or 'nothing'}"
        )

    def make(self, path: str) -> None:
        self.produced.add(path.replace("${PHYSNET_DATA}", "$PHYSNET_DATA").rstrip("/"))


def parse_physnet(document: Document, argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:
        pytest.fail(f"{document.where}\n  physnet rejects the arguments (exit {exit.code})")
    if args.command == "generate":
        dataset = args.dataset
        if dataset not in available_generators():
            assert (ROOT / dataset).is_file(), f"{document.where}\n  no dataset {dataset}"
            dataset = str(ROOT / dataset)
        overrides = dict(item.split("=", 1) for item in args.overrides)
        plan_generation(
            dataset,
            samples=args.samples,
            overrides={key: json.loads(value) for key, value in overrides.items()},
        )
        document.make(args.out)
    elif args.command == "train":
        config = ROOT / args.config
        assert config.is_file(), f"{document.where}\n  no configuration {args.config}"
        load_config(config, overrides=args.overrides)
        data = load_toml(config).get("data", {})
        for key in ("train", "val"):
            if isinstance(data.get(key), str):
                document.need(data[key], f"the configuration's data.{key}")
        out = args.out or f"runs/{config.parent.name if config.stem == 'train' else config.stem}"
        for name in ("best.safetensors", "last.safetensors"):
            document.make(f"{out.rstrip('/')}/{name}")
    elif args.command == "evaluate":
        if args.checkpoint not in PRETRAINED:
            document.need(args.checkpoint, "the checkpoint")
        document.need(args.data, "the data")
    elif args.command == "reconstruct":
        assert args.model in PRETRAINED or args.model.endswith(".safetensors"), args.model
        if not args.merge:  # a merge reads the shards the ranks' commands wrote
            document.need(args.measurements, "the measurements")
        document.make(args.out)
    elif args.command == "bench":
        run_script(document, [f"benchmarks/{args.name}.py", *args.arguments])


def run_script(document: Document, argv: list[str]) -> None:
    script = argv[0]
    assert (ROOT / script).is_file(), f"{document.where}\n  no script {script}"
    for path in SCRIPT_INPUTS.get(script, ()):
        document.need(path, f"{script} reads")
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(parser, args=None, namespace=None):
        raise _Parsed(original(parser, args, namespace))

    saved = sys.argv, list(sys.path)
    argparse.ArgumentParser.parse_args = parse_and_stop
    sys.argv = [str(ROOT / script), *argv[1:]]
    sys.path.insert(0, str((ROOT / script).parent))  # as `python SCRIPT` puts it there
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exit:
        pytest.fail(f"{document.where}\n  {script} rejects the arguments (exit {exit.code})")
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv, sys.path[:] = saved
    pytest.fail(f"{document.where}\n  {script} ran to the end without parsing arguments")


def check(document: Document, words: list[str]) -> None:
    program, arguments = words[0], words[1:]
    if program == "physnet":
        parse_physnet(document, arguments)
    elif program == "torchrun":
        assert "-m" in arguments, f"{document.where}\n  torchrun without -m"
        module = arguments.index("-m")
        assert arguments[module + 1] == "physnet.cli", document.where
        parse_physnet(document, arguments[module + 2 :])
    elif program in ("python", "python3") and arguments[:2] == ["-m", "physnet.cli"]:
        parse_physnet(document, arguments[2:])
    elif program in ("python", "python3") and arguments[:1] == ["-m"]:
        assert arguments[1] in ("venv", "pip"), f"{document.where}\n  python -m {arguments[1]}"
    elif program in ("python", "python3"):
        assert arguments and arguments[0].endswith(".py"), f"{document.where}\n  not a script"
        run_script(document, arguments)
    elif program == "cp":
        document.need(arguments[0], "cp's source")
        document.make(arguments[1])
    elif program == "make":
        for target in arguments:
            assert target in MAKE_TARGETS, f"{document.where}\n  no make target {target}"
    else:
        assert program in SKIPPED, f"{document.where}\n  unknown command {program!r}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_run_as_written_in_order(path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    document = Document()
    for where, words in commands(path):
        document.where = where
        check(document, words)


def test_every_solver_has_a_card_and_every_card_has_commands():
    for folder in sorted(ROOT.glob("solvers/*/")):
        card = folder / "card.md"
        assert card.is_file(), f"{folder.relative_to(ROOT)} has no card.md"
        programs = {words[0] for _, words in commands(card)}
        assert "physnet" in programs, f"{card.relative_to(ROOT)} has no physnet command"


def test_the_checker_catches_what_it_should(tmp_path):
    card = tmp_path / "card.md"
    card.write_text(
        "```sh\n"
        "OMP_NUM_THREADS=1 physnet evaluate runs/x/best.safetensors $PHYSNET_DATA/x.h5\n"
        "```\n"
    )
    [(where, words)] = commands(card)
    assert words[:2] == ["physnet", "evaluate"]
    with pytest.raises(AssertionError, match="not produced by an earlier command"):
        check(Document(where), words)
    with pytest.raises(pytest.fail.Exception, match="physnet rejects the arguments"):
        check(Document(where), ["physnet", "generate", "gaussian-fields", "[--workers 2]"])
    with pytest.raises(pytest.fail.Exception, match="rejects the arguments"):
        check(Document(where), ["python", "examples/train_small.py", "--no-such-option"])
