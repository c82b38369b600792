"""The command line's shape: help on every argument, one meaning per flag, completion.

Each test walks the real parsers (``logicbundle`` and ``kubectl-logicbundle``),
so a sub-command or flag added later is held to the same rules.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.cli import DAEMONS, _plugin, build_parser, main
from logicbundle.cli._completion import (
    DIRECTIVE_DEFAULT,
    DIRECTIVE_NO_FILES,
    candidates,
    script,
)

REPO = Path(__file__).resolve().parents[2]
PARSERS = {"logicbundle": build_parser, "kubectl-logicbundle": _plugin.build_parser}


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser``, with the sub-command words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


@pytest.mark.parametrize("program", PARSERS)
def test_every_argument_of_every_command_has_help_text(program: str) -> None:
    missing = []
    for path, parser in walk(PARSERS[program]()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS:
                continue  # a deprecated spelling, hidden on purpose
            if not (action.help or "").strip():
                missing.append(" ".join((*path, *(action.option_strings or [action.dest]))))
    assert missing == []


@pytest.mark.parametrize("program", PARSERS)
def test_o_means_the_output_format_in_every_command_that_has_it(program: str) -> None:
    seen = []
    for path, parser in walk(PARSERS[program]()):
        for action in parser._actions:
            if "-o" in action.option_strings or "--output" in action.option_strings:
                seen.append(path)
                assert action.option_strings == ["-o", "--output"], path
                assert action.dest == "output", path
                convert = action.type
                assert callable(convert)
                assert [convert(v) for v in ("text", "json", "yaml")] == [
                    "text",
                    "json",
                    "yaml",
                ]
                with pytest.raises(argparse.ArgumentTypeError):
                    convert("xml")
    printing = {"status", "history"} | (
        {"pack", "push", "sign", "verify", "inspect", "version"}
        if program == "logicbundle"
        else set()
    )
    assert printing <= {p[0] for p in seen if p}


def test_every_flag_has_one_meaning_across_the_user_commands() -> None:
    """The same flag, in two user commands, writes the same destination with the same kind."""
    meaning: dict[str, tuple[str, int | str | None]] = {}
    for path, parser in walk(build_parser()):
        if path and path[0] in DAEMONS:
            continue  # the daemons' flags are the chart's, not typed by hand
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            kind = (action.dest, action.nargs)
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                if flag == "--version" and path:
                    pytest.fail(f"{' '.join(path)} --version: that is the program's version flag")
                assert meaning.setdefault(flag, kind) == kind, (path, flag)


def test_pack_writes_to_output_file_and_the_old_spelling_still_works_with_a_warning(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["pack", "dir", "--output-file", "x.tar", "-o", "json"])
    assert (args.output_file, args.output) == ("x.tar", "json")
    args = build_parser().parse_args(["pack", "dir", "--out", "x.tar", "--version", "1.0.0"])
    assert (args.output_file, args.bundle_version) == ("x.tar", "1.0.0")
    err = capsys.readouterr().err
    assert "--out is deprecated, use --output-file" in err
    assert "--version is deprecated, use --bundle-version" in err


def test_o_with_a_file_name_says_where_the_file_goes_now(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pack", "dir", "-o", "pricing.oci.tar"])
    assert exc.value.code == 2
    assert "write the packed file with --output-file FILE" in capsys.readouterr().err


def test_help_lists_the_daemons_apart_from_the_user_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    commands, _, daemons = text.partition("daemons (run in the cluster")
    assert daemons, text
    for name in ("pack", "push", "sign", "verify", "status", "promote", "completion"):
        assert f"\n    {name} " in commands
    for name in DAEMONS:
        assert f"\n    {name} " not in commands
        assert f"\n  {name} " in daemons
    assert set(DAEMONS) == {"operator", "distributor", "agent"}
    assert "Exit codes: 0 done, 1 failed, 2 usage" in daemons


# --- completion ---------------------------------------------------------------------------------

BASH = shutil.which("bash")


def complete(program: str, words: list[str]) -> list[str]:
    """What the generated bash completion offers for ``words`` (the last one being typed)."""
    assert BASH is not None
    code = script(PARSERS[program](), "bash")
    function = code.split("-F ")[1].split()[0]
    quoted = " ".join(f"'{w}'" for w in [program, *words])
    run = f"{code}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words)}; {function}; "
    run += 'printf "%s\\n" "${COMPREPLY[@]}"'
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", run],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize(
    ("program", "words", "offered"),
    [
        ("logicbundle", ["sta"], ["status"]),
        ("logicbundle", ["p"], ["pack", "promote", "push"]),
        ("logicbundle", ["status", "rules", "-o", ""], ["text", "json", "yaml"]),
        ("logicbundle", ["pack", "dir", "--output-"], ["--output-file"]),
        ("logicbundle", ["-v", "completion", ""], ["bash", "zsh"]),
        ("logicbundle", ["operator", "--startup-"], ["--startup-timeout"]),
        ("kubectl-logicbundle", ["-n", "shop", "his"], ["history"]),
        ("kubectl-logicbundle", ["-n", "shop", "history", "x", "--out"], ["--output"]),
    ],
)
def test_bash_completion_offers_commands_flags_and_values(
    program: str, words: list[str], offered: list[str]
) -> None:
    assert sorted(complete(program, words)) == sorted(offered)


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize(
    ("program", "words"),
    [
        ("logicbundle", ["sta"]),
        ("logicbundle", ["p"]),
        ("logicbundle", [""]),
        ("logicbundle", ["status", "rules", "-o", ""]),
        ("logicbundle", ["pack", "dir", "--output-"]),
        ("logicbundle", ["-v", "completion", ""]),
        ("logicbundle", ["operator", "--startup-"]),
        ("logicbundle", ["status", "rules", ""]),
        ("logicbundle", ["nonsense", "-"]),
        ("kubectl-logicbundle", ["-n", "shop", "his"]),
        ("kubectl-logicbundle", ["-n", "shop", "history", "x", "--out"]),
        ("kubectl-logicbundle", ["--context", "staging", ""]),
        ("kubectl-logicbundle", ["status", "x", "-n", ""]),
        ("kubectl-logicbundle", ["-"]),
    ],
)
def test_the_kubectl_plugin_completion_answers_what_the_shell_script_offers(
    program: str, words: list[str]
) -> None:
    """``kubectl_complete-logicbundle`` and the bash script follow one set of rules."""
    found, directive = candidates(PARSERS[program](), words)
    assert sorted(found) == sorted(complete(program, words))
    assert directive == (DIRECTIVE_NO_FILES if found else DIRECTIVE_DEFAULT)


def test_kubectl_complete_prints_candidates_then_cobra_s_directive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _plugin.complete_main(["-n", "shop", "st"]) == 0
    assert capsys.readouterr().out == "status\n:4\n"
    assert _plugin.complete_main(["status", "rules", "-o", "j"]) == 0
    assert capsys.readouterr().out == "json\n:4\n"
    assert _plugin.complete_main(["status", "rules", ""]) == 0
    assert capsys.readouterr().out == ":0\n"  # a name: the shell's default


def test_the_kubectl_completion_executable_is_installed_with_the_plugin() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl_complete-logicbundle"] == "logicbundle.cli._plugin:complete_main"
    assert scripts["kubectl-logicbundle"] == "logicbundle.cli._plugin:main"


def test_the_completion_command_prints_a_script_for_bash_and_zsh(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    assert bash.rstrip().endswith("logicbundle")
    assert "complete -o default -F _logicbundle_complete logicbundle" in bash
    assert main(["completion", "zsh"]) == 0
    assert "bashcompinit" in capsys.readouterr().out
    assert _plugin.main(["completion", "bash"]) == 0
    assert "kubectl-logicbundle" in capsys.readouterr().out
