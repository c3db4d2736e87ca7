"""The README and docs/ stay true: generated tables, every command documented, every command line runnable."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

import pytest
from conftest import REPO

from appliance.cli import build_parser
from appliance.config import reference_markdown
from appliance.panel.indicator import vocabulary_markdown

README_PATH = REPO / "README.md"
DOCS_PATHS = sorted((REPO / "docs").glob("*.md"))
PAGES = {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in [README_PATH, *DOCS_PATHS]}
README = PAGES["README.md"]
CONFIGURATION = PAGES["docs/configuration.md"]
COMMANDS_PAGE = PAGES["docs/commands.md"]

README_MAX_BYTES = 15_360


def test_the_readme_is_short_enough_for_someone_who_just_unboxed_a_pi():
    size = len(README_PATH.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move details into docs/"


def test_the_config_reference_in_docs_is_the_one_generated_from_the_dataclasses():
    block = re.search(r"<!-- config-reference:[^\n]*-->\n(.*?)<!-- end config-reference -->", CONFIGURATION, re.S)
    assert block, "docs/configuration.md lost its config-reference markers"
    assert block.group(1) == reference_markdown(), "run `appliance config reference` and paste it into docs/configuration.md"
    assert not any("<!-- config-reference:" in text for name, text in PAGES.items() if name != "docs/configuration.md"), \
        "the config reference lives in docs/configuration.md only"


def test_the_readme_led_table_is_the_one_the_code_plays():
    block = re.search(r"<!-- led-vocabulary:[^\n]*-->\n(.*?)<!-- end led-vocabulary -->", README, re.S)
    assert block, "README.md lost its led-vocabulary markers"
    assert block.group(1) == vocabulary_markdown()


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
    if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        yield prefix, parser


COMMANDS = list(_commands(build_parser()))


def test_there_are_commands_to_check():
    assert {" ".join(name) for name, _ in COMMANDS} >= {"run", "demo", "config check", "config show",
                                                        "models list", "models fetch", "models verify",
                                                        "classify", "captures", "bench"}


@pytest.mark.parametrize("name, parser", COMMANDS, ids=[" ".join(n) for n, _ in COMMANDS])
def test_every_command_has_help_with_an_example_and_a_row_in_docs_commands(name, parser):
    """docs/commands.md is the table of every command; the README names only those a new user needs."""
    assert parser.description and "Example:" in parser.description
    assert f"appliance {' '.join(name)}" in parser.description
    assert f"`appliance {' '.join(name)}" in COMMANDS_PAGE, f"`appliance {' '.join(name)}` has no row in docs/commands.md"


# --- command lines in the README and docs/ ----------------------------------------------------------

def _fenced_lines(text):
    """Each line of each fenced code block (indented fences too, as in a list item), continuations joined."""
    for match in re.finditer(r"^( *)```[^\n]*\n(.*?)^\1```", text, re.M | re.S):
        body = re.sub(r"\\\n\s*", " ", match.group(2))
        for line in body.splitlines():
            if line.strip():
                yield line.strip()


def _words(line):
    """The command's words: comments, `sudo` and leading VAR=value assignments dropped."""
    words = shlex.split(line, comments=True)
    while words and (words[0] == "sudo" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0])):
        words = words[1:]
    return words


def _command_lines(kinds):
    """(page, line) for each fenced line that runs one of these kinds of program (other lines: TOML, output)."""
    found = []
    for page, text in PAGES.items():
        for line in _fenced_lines(text):
            program = re.match(r"(?:sudo )?(?:[A-Z_][A-Z0-9_]*=\S* )*(\S+)", line).group(1)
            if _kind(program) in kinds:
                found.append((page, line))
    return list(dict.fromkeys(found))


def _kind(program):
    if program == "appliance" or program.endswith("/bin/appliance"):
        return "appliance"
    if program == "./dev":
        return "dev"
    if program in ("image/build.sh", "image/test-boot.sh"):
        return program
    return None


def _dev_commands():
    """The arms of ./dev's `case "$command"`, each with the `appliance` command it passes its arguments to."""
    script = (REPO / "dev").read_text(encoding="utf-8")
    block = re.search(r'^case "\$command" in\n(.*?)^esac', script, re.M | re.S).group(1)
    arms = {}
    for name, body in re.findall(r"^ {4}([a-z][a-z-]*)\)(.*?);;", block, re.M | re.S):
        passes_on = re.search(r'"\$venv/bin/appliance" ([a-z-]+) "\$@"', body)
        arms[name] = passes_on.group(1) if passes_on else None
    return arms


def _script_options(script):
    """Every option an image script's `while … case "$1"` parser accepts."""
    text = (REPO / script).read_text(encoding="utf-8")
    block = re.search(r'^while \[ \$# -gt 0 \]; do\n\s+case "\$1" in\n(.*?)^\s+esac', text, re.M | re.S).group(1)
    return {option for arm in re.findall(r"^\s+(-[-\w|]+)\)", block, re.M) for option in arm.split("|")}


def _parse(argv):
    """parse_args with the real parser; the error message instead of a SystemExit."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            return build_parser().parse_args(argv), None
        except SystemExit as exit_:
            return None, stderr.getvalue().strip() or f"exit {exit_.code}"


APPLIANCE_LINES = _command_lines({"appliance"})
DEV_LINES = _command_lines({"dev"})
SCRIPT_LINES = _command_lines({"image/build.sh", "image/test-boot.sh"})


def test_the_docs_have_command_lines_of_every_kind_to_check():
    assert len(APPLIANCE_LINES) >= 10 and DEV_LINES and SCRIPT_LINES
    assert {_words(line)[1] for _, line in DEV_LINES} >= {"demo", "test"}
    assert {"image/build.sh", "image/test-boot.sh"} <= {_words(line)[0] for _, line in SCRIPT_LINES}


@pytest.mark.parametrize("page, line", APPLIANCE_LINES, ids=[f"{p}: {l}" for p, l in APPLIANCE_LINES])
def test_every_appliance_command_line_in_the_docs_parses(page, line):
    args, error = _parse(_words(line)[1:])
    assert error is None, f"{page}: `{line}` does not parse: {error}"
    assert getattr(args, "func", None), f"{page}: `{line}` names no command"


@pytest.mark.parametrize("page, line", DEV_LINES, ids=[f"{p}: {l}" for p, l in DEV_LINES])
def test_every_dev_command_line_in_the_docs_is_one_dev_runs(page, line):
    command, *rest = _words(line)[1:]
    arms = _dev_commands()
    assert command in arms, f"{page}: `{line}`: ./dev has no command {command!r} (it has {sorted(arms)})"
    if arms[command]:  # ./dev passes its arguments on to an appliance command: they must parse there too
        _, error = _parse([arms[command], *rest])
        assert error is None, f"{page}: `{line}`: `appliance {arms[command]}` refuses the arguments: {error}"


@pytest.mark.parametrize("page, line", SCRIPT_LINES, ids=[f"{p}: {l}" for p, l in SCRIPT_LINES])
def test_every_image_script_option_in_the_docs_is_one_the_script_parses(page, line):
    script, *rest = _words(line)
    accepted = _script_options(script)
    unknown = [word for word in rest if word.startswith("-") and word not in accepted]
    assert not unknown, f"{page}: `{line}`: {script} has no option {unknown} (it has {sorted(accepted)})"


def _inline_spans(program_pattern):
    for page, text in PAGES.items():
        prose = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.M | re.S)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if re.match(rf"(?:sudo )?(?:{program_pattern}) ", span):
                yield page, span


INLINE_APPLIANCE = list(dict.fromkeys(_inline_spans(r"appliance|\.venv/bin/appliance")))
INLINE_SCRIPTS = list(dict.fromkeys(_inline_spans(r"image/build\.sh|image/test-boot\.sh")))


@pytest.mark.parametrize("page, span", INLINE_APPLIANCE, ids=[f"{p}: {s}" for p, s in INLINE_APPLIANCE])
def test_every_appliance_command_named_in_prose_exists_with_those_options(page, span):
    """Inline `appliance …` spans are often synopses (`[--once]`, `FILE`): their command and options must exist."""
    parser = build_parser()
    words = span.split()
    words = words[words.index(next(w for w in words if w.endswith("appliance"))) + 1:]
    path = []
    for word in words:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[word]
        path.append(word)
    assert path, f"{page}: `{span}` names no appliance command"
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words))) - {"--debug", "--help"}
    unknown = sorted(options - set(parser._option_string_actions))
    assert not unknown, f"{page}: `{span}`: `appliance {' '.join(path)}` has no option {unknown}"


@pytest.mark.parametrize("page, span", INLINE_SCRIPTS, ids=[f"{p}: {s}" for p, s in INLINE_SCRIPTS])
def test_every_image_script_option_named_in_prose_is_one_the_script_parses(page, span):
    words = span.split()
    if words[0] == "sudo":
        words = words[1:]
    unknown = [w for w in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span) if w not in _script_options(words[0])]
    assert not unknown, f"{page}: `{span}`: {words[0]} has no option {unknown}"


# --- links between the pages ---------------------------------------------------------------------------

def _anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.M | re.S)
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


LINKS = list(dict.fromkeys((page, target) for page, text in PAGES.items()
                           for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)))


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p} → {t}" for p, t in LINKS])
def test_every_link_between_the_pages_leads_somewhere(page, target):
    file, _, anchor = target.partition("#")
    path = ((REPO / page).parent / file).resolve() if file else REPO / page
    assert path.exists(), f"{page}: the link {target} leads to nothing"
    if anchor and path.suffix == ".md":
        assert anchor in _anchors(path), f"{page}: {path.name} has no heading #{anchor}"


PATHS = list(dict.fromkeys((page, span) for page, text in PAGES.items()
                           for span in re.findall(r"`((?:appliance|image|systemd|hardware|models|tests)/[\w./@-]*)`", text)))


@pytest.mark.parametrize("page, path", PATHS, ids=[f"{p}: {s}" for p, s in PATHS])
def test_every_file_or_folder_the_pages_name_is_in_the_repository(page, path):
    """The package moves now and then (one folder per part of the design): a page must follow it."""
    assert (REPO / path).exists(), f"{page}: `{path}` is not in the repository"


def test_the_layout_in_docs_has_a_line_for_every_folder_of_the_package():
    folders = sorted(p.parent.name for p in (REPO / "appliance").glob("*/__init__.py"))
    layout = PAGES["docs/architecture.md"].split("## Layout", 1)[1]
    missing = [f for f in folders if not re.search(rf"^\* `appliance/{f}/`", layout, re.M)]
    assert not missing, f"docs/architecture.md's Layout has no line for appliance/{missing}/"
