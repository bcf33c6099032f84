#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The man pages stay true to the programs (issue 18).

Usage: man_options.py BIN_DIR SOURCE_DIR

Every long option that heirloomctl --help, each heirloomctl command's
--help, heirloom-keeper --help or heirloom-worker --help prints must appear
in that program's man page (man/*.scd); every heirloomctl command too;
every option either daemon reads must appear in heirloom.conf(5) (except
name and config, which choose the file, and help and version); every HL_API
function of include/heirloom/heirloom.h must appear in heirloom(3).
Prints each one missing and exits 1.
"""
import re
import subprocess
import sys

OPT = re.compile(r"--(?:\[no-\])?([a-z][a-z0-9-]*)")


def helptext(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {r.returncode}\n{r.stderr}")
    return r.stdout


def mentions(page, word):
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", page) is not None


def main():
    bindir, src = sys.argv[1], sys.argv[2]
    pages = {}
    for p in ("heirloomctl.1", "heirloom-keeper.8", "heirloom-worker.8", "heirloom.conf.5",
              "heirloom.3"):
        with open(f"{src}/man/{p}.scd", encoding="utf-8") as f:
            pages[p] = f.read()
    missing = []

    def need(page, word, why):
        if not mentions(pages[page], word):
            missing.append(f"{page}: {word} ({why})")

    ctl = f"{bindir}/heirloomctl"
    top = helptext(ctl, "--help")
    # Command lines in the main help: two spaces, the command, its arguments.
    cmds = sorted(set(re.findall(r"^  ([a-z]+)(?: |$)", top, re.M)) - {"h"})
    if len(cmds) < 10:
        sys.exit(f"found only {cmds} as heirloomctl commands: has --help changed form?")
    for opt in OPT.findall(top):
        need("heirloomctl.1", "--" + opt, "heirloomctl --help")
    for cmd in cmds:
        need("heirloomctl.1", cmd, "a command in heirloomctl --help")
        for opt in OPT.findall(helptext(ctl, cmd, "--help")):
            need("heirloomctl.1", "--" + opt, f"heirloomctl {cmd} --help")

    for prog, page in (("heirloom-keeper", "heirloom-keeper.8"),
                       ("heirloom-worker", "heirloom-worker.8")):
        text = helptext(f"{bindir}/{prog}", "--help")
        opts = set(re.findall(r"^ {2}(?:-., )? *--(?:\[no-\])?([a-z][a-z0-9-]*)", text, re.M))
        if len(opts) < 10:
            sys.exit(f"found only {opts} as {prog} options: has --help changed form?")
        for opt in OPT.findall(text):
            need(page, "--" + opt, f"{prog} --help")
        for opt in opts - {"help", "version", "name", "config"}:
            need("heirloom.conf.5", opt, f"an option of {prog}")

    with open(f"{src}/include/heirloom/heirloom.h", encoding="utf-8") as f:
        funcs = re.findall(r"^HL_API [^(]*?\b(hl_\w+)\(", f.read(), re.M)
    if len(funcs) < 15:
        sys.exit(f"found only {funcs} in heirloom.h")
    for fn in funcs:
        need("heirloom.3", fn, "an HL_API function")

    missing = list(dict.fromkeys(missing))
    for m in missing:
        print("missing in man/" + m, file=sys.stderr)
    print(f"man_options: {len(cmds)} commands, 3 programs' options, {len(funcs)} functions: "
          + ("ok" if not missing else f"{len(missing)} missing"))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
