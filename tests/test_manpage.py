"""The manual page swiftunionfs(1): made by scripts/manpage from docs/swiftunionfs.1.in and
the binary, it renders without a groff warning, names every option and flag `--help` (and
every subcommand's `--help`) lists, and every option it documents beyond `--help` is one
the binary accepts."""

import os
import re
import subprocess
import tempfile

import pytest

from conftest import REPO, SUF_BIN

pytestmark = pytest.mark.suf_only

HELPS = [["--help"], ["mount", "--help"], ["inspect", "--help"], ["run", "--help"], ["image", "--help"],
         ["image", "import", "--help"], ["image", "ls", "--help"], ["image", "inspect", "--help"],
         ["image", "commit", "--help"], ["diff", "--help"], ["commit", "--help"]]


def make_page(tmp_path):
    out = str(tmp_path / "swiftunionfs.1")
    r = subprocess.run([str(REPO / "scripts" / "manpage"), "--bin", SUF_BIN, "--out", out],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def render(page, device="ascii"):
    """(text, warnings) of the page as man shows it; -ww: every warning groff knows."""
    r = subprocess.run(["groff", "-ww", "-man", "-T" + device, "-P-c", "-P-b", "-P-o", "-P-u", page],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def help_tokens(text):
    """The options and flags a --help text names: every word of an entry's term column
    (an indented line up to its first run of two spaces), and the comma-separated words
    after "Heading:" on an unindented line. Read independently of scripts/manpage."""
    tokens = set()
    for line in text.expandtabs().splitlines():
        if not line.strip() or re.match(r"^\s*(usage|USAGE):", line) or line.startswith("       "):
            continue  # usage lines (and their continuations) belong to the SYNOPSIS
        if line.startswith("OVERVIEW:"):
            continue  # ArgumentParser's heading of the command's one-line summary
        if line.startswith(" "):
            words = re.split(r"[,\s]+", re.split(r"\s{2,}", line.strip(), maxsplit=1)[0])
        else:
            m = re.match(r"^[A-Za-z][^:]*:\s+(.+)$", line)
            words = re.split(r",\s*", m.group(1)) if m else []
        tokens.update(w for w in words if re.search(r"[A-Za-z]", w) and not w.startswith("<"))
    return tokens


def missing_from(page_text, tokens):
    flat = " ".join(page_text.split())
    return sorted(t for t in tokens if t not in flat)


def helps():
    out = []
    for args in HELPS:
        r = subprocess.run([SUF_BIN, *args], capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        if r.returncode == 0:
            out.append((args, r.stdout))
    return out


@pytest.mark.timeout(120)
def test_manpage_renders_without_warnings(tmp_path):
    page = make_page(tmp_path)
    for device in ("ascii", "utf8"):
        text, warnings = render(page, device)
        assert warnings == "", f"groff -ww -T{device}:\n{warnings}"
        assert "SWIFTUNIONFS(1)" in text
    version = subprocess.run([SUF_BIN, "--version"], capture_output=True, text=True, timeout=20).stdout.split()[-1]
    assert f"swiftunionfs {version}" in text, "the footer names the binary's version"
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "EXIT STATUS",
                    "ON-DISK FORMAT", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.M), f"no {section} section"
    src = open(page).read()
    left = [m for m in ("@VERSION@", "@DATE@", "@GENERATED", "@END") if m in src]
    assert not left, f"template markers left in the page: {left}"


@pytest.mark.timeout(120)
def test_every_option_help_lists_is_in_the_manpage(tmp_path):
    text, _ = render(make_page(tmp_path))
    found = helps()
    assert found and found[0][0] == ["--help"], "swiftunionfs --help must answer"
    assert [a for a, _ in found] == HELPS, "every subcommand answers --help"
    for args, help_text in found:
        tokens = help_tokens(help_text)
        assert len(tokens) > 3, f"too few options read from `swiftunionfs {' '.join(args)}`: {tokens}"
        missing = missing_from(text, tokens)
        assert not missing, f"`swiftunionfs {' '.join(args)}` lists {missing}, the manual page does not"
    for sub in ("inspect", "run", "mount", "image import", "image ls", "image inspect", "image commit", "diff", "commit"):
        assert re.search(rf"^   {re.escape(sub)}$", text, re.M), f"no subsection for {sub}"
    assert "--generate-completion-script" in " ".join(text.split())


@pytest.mark.timeout(120)
def test_the_check_catches_an_option_left_out(tmp_path):
    """The check above can fail: a page without the stats= entry is caught."""
    page = make_page(tmp_path)
    src = open(page).read()
    cut = re.sub(r"\.TP\n\.B stats=FILE\n[^\n]*\n", "", src)
    assert cut != src, "the generated page has no stats=FILE entry to cut"
    with open(page, "w") as f:
        f.write(cut)
    text, _ = render(page)
    assert "stats=FILE" in missing_from(text, help_tokens(helps()[0][1]))


def documented_compat_options(page):
    """The -o words the OPTIONS section documents beyond --help: the tags of its entries
    (the line after .TP) and the bold words of its "Passed to libfuse" and "Accepted and
    ignored" lists."""
    src = open(page).read()
    section = src.split(".SS Options taken for compatibility", 1)[1].split(".SH SUBCOMMANDS", 1)[0]
    words, lines, listing = set(), section.splitlines(), False
    for i, line in enumerate(lines):
        if line.startswith((".PP", ".TP", ".SS", ".SH")):
            listing = line == ".PP" and i + 1 < len(lines) and \
                lines[i + 1].startswith(("Passed to libfuse", "Accepted and ignored"))
        m = re.match(r"^\.(B|BR|BI) (.*)$", line)
        if not m or not (listing or (i > 0 and lines[i - 1] == ".TP")):
            continue
        args = re.findall(r'"[^"]*"|\S+', m.group(2))
        if m.group(1) == "BR" and len(args) > 1 and args[1].startswith("("):
            continue  # a reference to another page: fstab (5)
        for a in (args if m.group(1) == "B" else args[::2]):
            w = re.sub(r"\\f.", "", a.strip('"').replace("\\-", "-")).strip(" ,")
            if re.fullmatch(r"[a-z_][a-z0-9_.-]*=?[0-9]?", w):
                words.add(w)
    if "no" in words:  # "relatime, ..., mand (and their no forms)"
        words.discard("no")
        words.update("no" + w for w in ("relatime", "strictatime", "lazytime", "iversion", "mand"))
    return words


VALUES = {"writeback=": "1", "fast_ino=": "1", "squash_to_uid=": "7", "squash_to_gid=": "7",
          "redirect_dir=": "off", "metacopy=": "off", "index=": "off", "xino=": "off", "nfs_export=": "off"}
REFUSED = {"max_read=", "blksize="}


@pytest.mark.timeout(300)
def test_documented_options_are_accepted(tmp_path):
    """Each option the page documents beyond --help is taken (or, where it says so, refused
    with one line), checked without mounting through `inspect`, which parses -o as a mount does."""
    words = documented_compat_options(make_page(tmp_path))
    assert {"squash_to_root", "static_nlink", "noxattrs=1", "allow_other", "nofail"} <= words, words
    lower = tempfile.mkdtemp(dir=tmp_path)
    wrong = []
    for w in sorted(words):
        item = w + VALUES.get(w, "x") if w.endswith("=") else w
        r = subprocess.run([SUF_BIN, "inspect", "-o", f"lowerdir={lower},{item}", "."],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        if w in REFUSED:
            if r.returncode != 2 or len(r.stderr.strip().splitlines()) != 1:
                wrong.append(f"{item}: documented as refused, got {r.returncode} {r.stderr.strip()!r}")
        elif r.returncode != 0:
            wrong.append(f"{item}: documented as accepted, got {r.returncode} {r.stderr.strip()!r}")
    assert not wrong, "\n".join(wrong)
    assert os.listdir(lower) == []
