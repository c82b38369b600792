"""``logicbundle completion bash|zsh``: shell completion written from the parser itself.

The script is generated from the same :mod:`argparse` parser that parses the
command line, so a new sub-command or flag completes without anyone editing
it; a unit test drives the script in bash.  It completes sub-commands, each
sub-command's flags, the values of flags and arguments with a fixed set
(``-o text|json|yaml``, ``completion bash|zsh``), and file names elsewhere.
zsh runs the same script through ``bashcompinit``.  No dependency
(argcomplete would start Python on every Tab).

kubectl completes a plugin's arguments by running ``kubectl_complete-<plugin>``
from ``PATH`` with the words after the plugin's name, the last one being the
word typed so far, and reading one candidate per line and a last line
``:<directive>`` (cobra's protocol).  :func:`candidates` answers it from the
same parser and by the same rules as the script; the wheel installs
``kubectl_complete-logicbundle`` (:func:`logicbundle.cli._plugin.complete_main`).
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable, Iterable
from typing import Any, Final

SHELLS: Final = ("bash", "zsh")

_BRACED: Final = re.compile(r"^\{([^{}]+)\}$")


def _visible(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.help != argparse.SUPPRESS


def _values(action: argparse.Action) -> list[str] | None:
    """The fixed values a flag takes (None: free text or a file name)."""
    if action.choices is not None:
        return [str(choice) for choice in action.choices]
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    match = _BRACED.match(metavar)
    return match.group(1).split(",") if match else None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its actions private; this is read-only
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(items: Iterable[str]) -> str:
    return shlex.quote(" ".join(items))


def _options_case(parser: argparse.ArgumentParser, indent: str) -> list[str]:
    """``opts=...`` and a ``case "$prev"`` completing the values of ``parser``'s flags."""
    actions = [a for a in parser._actions if _visible(a)]
    lines = [f"{indent}opts={_words(s for a in actions for s in a.option_strings)}"]
    fixed = [
        v
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
        for v in _values(a) or ()
    ]
    if fixed:
        lines.append(f"{indent}args={_words(fixed)}")
    valued = [a for a in actions if a.nargs != 0]
    if valued:
        lines.append(f'{indent}case "$prev" in')
        for action in valued:
            pattern = "|".join(action.option_strings)
            values = _values(action)
            reply = f'$(compgen -W {_words(values)} -- "$cur")' if values else ""
            lines.append(f"{indent}    {pattern}) COMPREPLY=({reply}); return 0 ;;")
        lines.append(f"{indent}esac")
    return lines


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser``'s program for ``shell`` (bash or zsh)."""
    prog = parser.prog.replace(" ", "-")
    function = "_" + re.sub(r"[^A-Za-z0-9_]", "_", prog) + "_complete"
    commands = _subcommands(parser)
    global_valued = [
        s for a in parser._actions if _visible(a) and a.nargs != 0 for s in a.option_strings
    ]
    lines = [f'# {prog} completion for {shell}: eval "$({prog} completion {shell})"']
    if shell == "zsh":
        lines.append("autoload -U +X bashcompinit && bashcompinit")
    lines += [
        f"{function}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local command="" opts="" args="" word i skip=0',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$word" in',
    ]
    if global_valued:
        lines.append(f"            {'|'.join(global_valued)}) skip=1 ;;")
    lines += [
        "            -*) ;;",
        '            *) command="$word"; break ;;',
        "        esac",
        "    done",
        '    case "$command" in',
        '        "")',
        *_options_case(parser, " " * 12),
        "            ;;",
    ]
    for name, sub in commands.items():
        lines.append(f"        {name})")
        lines += _options_case(sub, " " * 12)
        lines.append("            ;;")
    lines += [
        "        *) return 0 ;;",
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        '    elif [[ -z "$command" ]]; then',
        f'        COMPREPLY=($(compgen -W {_words(commands)} -- "$cur"))',
        '    elif [[ -n "$args" ]]; then',
        '        COMPREPLY=($(compgen -W "$args" -- "$cur"))',
        "    fi",
        "    return 0",
        "}",
        f"complete -o default -F {function} {prog}",
    ]
    return "\n".join(lines) + "\n"


# cobra's ShellCompDirective values that kubectl passes on to the shell.
DIRECTIVE_DEFAULT: Final = 0
"""No candidate fits: the shell completes file names."""
DIRECTIVE_NO_FILES: Final = 4
"""The candidates are all there is: no file names."""


def _command_of(
    parser: argparse.ArgumentParser, before: list[str]
) -> tuple[bool, argparse.ArgumentParser | None]:
    """Whether ``before`` names a known sub-command (or none yet), and which."""
    commands = _subcommands(parser)
    global_valued = {
        s for a in parser._actions if _visible(a) and a.nargs != 0 for s in a.option_strings
    }
    skip = False
    for word in before:
        if skip:
            skip = False
        elif word in global_valued:
            skip = True
        elif not word.startswith("-"):
            return word in commands, commands.get(word)
    return True, None


def _offered(
    parser: argparse.ArgumentParser, command: argparse.ArgumentParser | None, prev: str, cur: str
) -> list[str] | None:
    """The candidates a fixed set allows (None: a free word, so file names)."""
    scope = command if command is not None else parser
    actions = [a for a in scope._actions if _visible(a)]
    for action in actions:
        if action.nargs != 0 and prev in action.option_strings:
            return _values(action)
    if cur.startswith("-"):
        return [s for a in actions for s in a.option_strings]
    if command is None:
        return list(_subcommands(parser))
    fixed = [
        v
        for a in command._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
        for v in _values(a) or ()
    ]
    return fixed or None


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], int]:
    """What completes the last of ``words`` (typed after the program's name), and a directive.

    The rules of :func:`script`: a flag's fixed values after that flag; the
    sub-command's (or the program's) flags after ``-``; the sub-commands before
    one is given; an argument's fixed values; else file names
    (:data:`DIRECTIVE_DEFAULT`, no candidate).
    """
    *before, cur = words or [""]
    known, command = _command_of(parser, before)
    offered = _offered(parser, command, before[-1] if before else "", cur) if known else None
    if offered is None:
        return [], DIRECTIVE_DEFAULT
    return [o for o in offered if o.startswith(cur)], DIRECTIVE_NO_FILES


def cobra_answer(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """:func:`candidates` as kubectl reads a plugin's completion: one per line, then ``:N``."""
    found, directive = candidates(parser, words)
    return "".join(f"{c}\n" for c in found) + f":{directive}\n"


def add_parser(
    sub: Any,
    *,
    verbosity: argparse.ArgumentParser,
    build: Callable[[], argparse.ArgumentParser],
) -> None:
    """Add ``completion SHELL``; ``build`` makes the whole parser the script completes."""
    completion = sub.add_parser(
        "completion",
        parents=[verbosity],
        help="print a shell completion script (bash, zsh)",
        description="Print a completion script. bash: `source <(logicbundle completion bash)`, "
        "or write it to /etc/bash_completion.d/logicbundle; zsh: `source <(logicbundle "
        "completion zsh)` in ~/.zshrc.",
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")

    def run(args: argparse.Namespace) -> int:
        print(script(build(), args.shell), end="")
        return 0

    completion.set_defaults(func=run)
