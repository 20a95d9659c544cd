"""The README and docs/ as a user reads them: every command in them parses with the options it names, every option
named in their prose exists, every file they send you to exists, and the README's Python example runs as written."""

import re
import shlex
from pathlib import Path

import pytest

from lit_dpo import eval as lit_eval
from lit_dpo import export, fit, plan, validate
from lit_dpo.cli import DPOCLI
from lit_dpo.data import __main__ as data_report
from lit_dpo.data.datamodule import demo_path
from lit_dpo.parser import _option_names

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GROUPS = ("model", "data", "trainer", "generations", "health", "perf", "checkpoint", "eval_harness", "finish")
ENTRY_POINTS = {"lit_dpo.fit": fit.main, "lit_dpo.validate": validate.main, "lit_dpo.data": data_report.main,
                "lit_dpo.plan": plan.main}  # fmt: skip


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", page.read_text(), flags=re.S)


def _commands() -> list[tuple[str, list[str]]]:
    """``(page: line, words)`` of every command in the pages' bash blocks, continuations joined, comments cut."""
    found = []
    for page in PAGES:
        for block in _blocks(page, "bash")[2 if page.name == "README.md" else 0 :]:  # after the set-up commands
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    found.append((f"{page.name}: {line.strip()[:60]}", words))
    return found


@pytest.mark.parametrize("where, words", _commands(), ids=[where for where, _ in _commands()])
def test_every_documented_command_parses(where, words, monkeypatch, capsys):
    """Each command's options and values are checked by the parser (``--print_config`` stops before any model or
    data loads); a script or recipe it runs must exist."""
    monkeypatch.chdir(ROOT)
    if words[0] == "sbatch":  # needs a cluster: its script exists, and the lit_dpo options it passes on parse
        script = ROOT / words[1]
        configs = re.findall(r"--config (\S+)", script.read_text())
        words = ["python", "-m", "lit_dpo.fit", *(f"--config={c}" for c in configs), *words[2:]]
    if words[:2] == ["python", "-m"] and words[2] in ENTRY_POINTS:
        helps = {"--help", "--data.help"} & set(words)
        with pytest.raises(SystemExit) as exit_info:
            ENTRY_POINTS[words[2]](words[3:] + ([] if helps else ["--print_config"]))
        assert exit_info.value.code in (0, None), capsys.readouterr().err
    elif words[:3] == ["python", "-m", "lit_dpo.export"]:  # parsed, not run (it needs a checkpoint)
        export.parser().parse_args(words[3:])
    elif words[:3] == ["python", "-m", "lit_dpo.eval"]:  # parsed, not run (it needs an export)
        lit_eval.parser().parse_args(words[3:])
    elif words[0] == "python":  # a benchmark, a script or python -m lit_dpo.report: it exists
        target = words[1] if words[1] != "-m" else words[2].replace(".", "/") + ".py"
        assert (ROOT / target).is_file(), where
    else:
        pytest.fail(f"{where}: not a command these docs should hold")


def test_every_option_named_in_the_docs_exists(capsys):
    known = set(_option_names(_fit_parser()))
    subclass_options = ("--trainer.logger.", "--trainer.strategy.", "--trainer.callbacks", "--trainer.plugins.")
    for page in PAGES:
        for option in set(re.findall(rf"--(?:{'|'.join(GROUPS)})\.[\w.]+", page.read_text())):
            option = option.rstrip(".")
            assert option in known or option.startswith(subclass_options) or option == "--data.help", (
                page.name,
                option,
            )


def test_every_linked_file_exists():
    for page in PAGES:
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in link:
                assert (page.parent / link).exists(), (page.name, link)


def _fit_parser():
    """The parser of ``python -m lit_dpo.fit``, as built for a command line (``--print_config`` loads nothing)."""
    parsers = []
    original = DPOCLI.init_parser

    def keep(self, **kwargs):
        parsers.append(original(self, **kwargs))
        return parsers[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DPOCLI, "init_parser", keep)
        with pytest.raises(SystemExit):
            DPOCLI(["--print_config"])
    return parsers[-1]


@pytest.mark.integration
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The bundled SmolLM2 model, 5 steps on the demo pairs: it trains, validates, exports and saves."""
    (example,) = _blocks(ROOT / "README.md", "python")
    monkeypatch.chdir(tmp_path)
    # the demo's first 16 held-out pairs instead of 64: the same code path, a quarter of the validations' time
    val = tmp_path / "val.jsonl"
    val.write_text("".join(open(demo_path("val")).readlines()[:16]))
    monkeypatch.setattr(
        "lit_dpo.data.datamodule.demo_path", lambda split: str(val) if split == "val" else demo_path(split)
    )
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"tensor\([01]\.\d*\)", printed) and "lit_dpo: trained policy" in printed
    assert (tmp_path / "my_policy" / "config.json").is_file()
    assert (tmp_path / "my_policy" / "tokenizer_config.json").is_file()
