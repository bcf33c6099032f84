#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""prom_check.py: is a text valid Prometheus text exposition format (0.0.4)?

Reads the text on stdin (or from FILE) and checks it twice:

1. With a strict parser written here from the format's specification
   (https://prometheus.io/docs/instrumenting/exposition_formats/): line
   grammar, metric and label names, label value escapes (\\ \" \\n only),
   float values, optional integer timestamps, one TYPE and one HELP per
   family and before its samples, each family's samples together, no
   duplicate series, the final line feed; histograms with ascending le
   buckets, cumulative counts, a le="+Inf" bucket equal to _count, and a
   _sum; summaries with quantile labels, _sum and _count. Rules of this
   project on top (each can be turned off): every family has a TYPE and a
   HELP, counters are named *_total and never negative.
2. With the reference parser of the Prometheus Python client
   (prometheus_client.parser.text_string_to_metric_families, Debian package
   python3-prometheus-client), which must agree with (1) on every sample.
   That parser alone is lax (it accepts samples with no TYPE, for one), hence
   both.

Exit status: 0 valid, 1 invalid (each problem on stderr as
"prom_check: line N: ..."), 2 usage, 3 the reference parser is missing.
Python 3 standard library plus python3-prometheus-client only.
"""

import argparse
import math
import re
import sys

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Go's strconv.ParseFloat as the Prometheus parser uses it, decimal forms.
FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf|[Ii]nfinity)\Z"
                   r"|[Nn]a[Nn]\Z")
TIMESTAMP = re.compile(r"-?[0-9]+\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Invalid(Exception):
    pass


def parse_float(text, what):
    if not FLOAT.match(text):
        raise Invalid("%s %r is not a float" % (what, text))
    return float(text)


def skip_blank(s, i):
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def parse_labels(s, i):
    """Labels from s[i] == '{'; returns (dict, index after '}')."""
    labels = {}
    i = skip_blank(s, i + 1)
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = LABEL_NAME.match(s, i)
        if not m:
            raise Invalid("bad label name at column %d" % (i + 1))
        name = m.group(0)
        if name.startswith("__"):
            raise Invalid("label name %r is reserved (starts with __)" % name)
        if name in labels:
            raise Invalid("label %r given twice" % name)
        i = skip_blank(s, m.end())
        if i >= len(s) or s[i] != "=":
            raise Invalid("expected '=' after label %r" % name)
        i = skip_blank(s, i + 1)
        if i >= len(s) or s[i] != '"':
            raise Invalid("expected '\"' to open the value of label %r" % name)
        i += 1
        value = []
        while True:
            if i >= len(s):
                raise Invalid("unterminated value of label %r" % name)
            c = s[i]
            if c == '"':
                i += 1
                break
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                    raise Invalid("invalid escape in the value of label %r" % name)
                value.append("\n" if s[i + 1] == "n" else s[i + 1])
                i += 2
                continue
            value.append(c)
            i += 1
        labels[name] = "".join(value)
        i = skip_blank(s, i)
        if i < len(s) and s[i] == ",":
            i = skip_blank(s, i + 1)
        elif i < len(s) and s[i] == "}":
            continue
        else:
            raise Invalid("expected ',' or '}' after the value of label %r" % name)


def parse_sample(line):
    m = METRIC_NAME.match(line)
    if not m:
        raise Invalid("bad metric name")
    name, i = m.group(0), m.end()
    labels = {}
    if i < len(line) and line[i] == "{":
        labels, i = parse_labels(line, i)
    rest = line[i:]
    if not rest or rest[0] not in " \t":
        raise Invalid("expected a blank and a value after %s" % name)
    parts = rest.split()
    if len(parts) not in (1, 2):
        raise Invalid("expected a value and an optional timestamp, got %r" % rest.strip())
    value = parse_float(parts[0], "value")
    if len(parts) == 2 and not TIMESTAMP.match(parts[1]):
        raise Invalid("timestamp %r is not an integer" % parts[1])
    return name, labels, value


HELP_ESCAPE = re.compile(r"\\(.|$)")


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (lineno, sample name, labels, value)
        self.closed = False


class Checker:
    def __init__(self, args):
        self.args = args
        self.families = {}
        self.order = []
        self.current = None
        self.problems = []
        self.series = set()

    def problem(self, lineno, msg):
        self.problems.append("line %d: %s" % (lineno, msg) if lineno else msg)

    def family(self, name, lineno):
        """The family NAME, making it current; an earlier, finished
        family of that name is an error (samples must be together)."""
        fam = self.families.get(name)
        if fam is None:
            fam = Family(name)
            self.families[name] = fam
            self.order.append(fam)
        elif fam is not self.current and (fam.closed or fam.samples):
            self.problem(lineno, "lines of %s are not together" % name)
        if self.current is not None and self.current is not fam:
            self.current.closed = True
        self.current = fam
        return fam

    def family_of_sample(self, name):
        """The family a sample name belongs to: the current typed family
        when the name is one of its series, else the name itself."""
        cur = self.current
        if cur is not None and cur.type in ("histogram", "summary"):
            suffixes = ("_bucket", "_sum", "_count") if cur.type == "histogram" else ("", "_sum", "_count")
            if any(name == cur.name + s for s in suffixes):
                return cur.name
        for base, fam in self.families.items():
            if fam.type == "histogram" and name in (base + "_bucket", base + "_sum", base + "_count"):
                return base
            if fam.type == "summary" and name in (base + "_sum", base + "_count"):
                return base
        return name

    def comment(self, line, lineno):
        parts = line[1:].split(None, 2)
        if not parts or parts[0] not in ("HELP", "TYPE"):
            return  # an ordinary comment
        if len(parts) < 2:
            self.problem(lineno, "%s without a metric name" % parts[0])
            return
        name = parts[1]
        if not METRIC_NAME.fullmatch(name):
            self.problem(lineno, "bad metric name %r in %s" % (name, parts[0]))
            return
        fam = self.family(name, lineno)
        if parts[0] == "HELP":
            if fam.help is not None:
                self.problem(lineno, "second HELP for %s" % name)
            text = parts[2] if len(parts) > 2 else ""
            for m in HELP_ESCAPE.finditer(text):
                if m.group(1) not in ("\\", "n"):
                    self.problem(lineno, "invalid escape in HELP of %s" % name)
            fam.help = text
        else:
            typ = parts[2].strip() if len(parts) > 2 else ""
            if typ not in TYPES:
                self.problem(lineno, "unknown TYPE %r for %s" % (typ, name))
            if fam.type is not None:
                self.problem(lineno, "second TYPE for %s" % name)
            if fam.samples:
                self.problem(lineno, "TYPE for %s after its samples" % name)
            fam.type = typ

    def sample(self, line, lineno):
        try:
            name, labels, value = parse_sample(line)
        except Invalid as e:
            self.problem(lineno, str(e))
            return
        fam = self.family(self.family_of_sample(name), lineno)
        key = (name, tuple(sorted(labels.items())))
        if key in self.series:
            self.problem(lineno, "duplicate series %s%s" % (name, dict(key[1])))
        self.series.add(key)
        fam.samples.append((lineno, name, labels, value))
        for want in self.args.label:
            if fam.name in self.args.label_exempt:
                break
            lname, _, lvalue = want.partition("=")
            if labels.get(lname) != lvalue:
                self.problem(lineno, "%s lacks the label %s=%r" % (name, lname, lvalue))

    def check_histogram(self, fam):
        groups = {}
        for lineno, name, labels, value in fam.samples:
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None, "line": lineno})
            if name == fam.name + "_bucket":
                if "le" not in labels:
                    self.problem(lineno, "%s without an le label" % name)
                    continue
                try:
                    le = parse_float(labels["le"], "le")
                except Invalid as e:
                    self.problem(lineno, str(e))
                    continue
                g["buckets"].append((lineno, le, value))
            elif "le" in labels:
                self.problem(lineno, "%s must not have an le label" % name)
            elif name == fam.name + "_sum":
                g["sum"] = value
            elif name == fam.name + "_count":
                g["count"] = value
            else:
                self.problem(lineno, "%s is not a series of histogram %s" % (name, fam.name))
        for rest, g in groups.items():
            where = "histogram %s%s" % (fam.name, dict(rest) if rest else "")
            les = [le for _, le, _ in g["buckets"]]
            if les != sorted(les) or len(set(les)) != len(les):
                self.problem(g["line"], "%s: le buckets not in increasing order" % where)
            counts = [v for _, _, v in g["buckets"]]
            if any(b < a for a, b in zip(counts, counts[1:])):
                self.problem(g["line"], "%s: bucket counts are not cumulative" % where)
            if not les or les[-1] != math.inf:
                self.problem(g["line"], '%s: no le="+Inf" bucket' % where)
            if g["sum"] is None:
                self.problem(g["line"], "%s: no %s_sum" % (where, fam.name))
            if g["count"] is None:
                self.problem(g["line"], "%s: no %s_count" % (where, fam.name))
            elif les and les[-1] == math.inf and counts[-1] != g["count"]:
                self.problem(g["line"], '%s: le="+Inf" bucket differs from _count' % where)

    def check_summary(self, fam):
        have = set()
        for lineno, name, labels, value in fam.samples:
            if name == fam.name:
                if "quantile" not in labels:
                    self.problem(lineno, "%s without a quantile label" % name)
                else:
                    try:
                        q = parse_float(labels["quantile"], "quantile")
                        if not 0 <= q <= 1:
                            self.problem(lineno, "quantile %s outside [0, 1]" % labels["quantile"])
                    except Invalid as e:
                        self.problem(lineno, str(e))
            elif name in (fam.name + "_sum", fam.name + "_count"):
                have.add(name[len(fam.name):])
        for part in ("_sum", "_count"):
            if part not in have:
                self.problem(0, "summary %s: no %s%s" % (fam.name, fam.name, part))

    def check_family(self, fam):
        if not fam.samples:
            self.problem(0, "family %s has no samples" % fam.name)
        if fam.type is None and self.args.require_type:
            self.problem(fam.samples[0][0] if fam.samples else 0, "%s has no TYPE line" % fam.name)
        if fam.help is None and self.args.require_help:
            self.problem(fam.samples[0][0] if fam.samples else 0, "%s has no HELP line" % fam.name)
        if fam.type == "histogram":
            self.check_histogram(fam)
        elif fam.type == "summary":
            self.check_summary(fam)
        elif fam.type == "counter":
            if self.args.counter_total and not fam.name.endswith("_total"):
                self.problem(0, "counter %s is not named *_total" % fam.name)
            for lineno, name, _, value in fam.samples:
                if math.isnan(value) or value < 0:
                    self.problem(lineno, "counter %s has value %r" % (name, value))

    def run(self, text):
        if not text:
            self.problem(0, "empty input")
            return
        if not text.endswith("\n"):
            self.problem(0, "the last line does not end with a line feed")
        for lineno, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
            if "\r" in line:
                self.problem(lineno, "carriage return in line")
            if not line.strip():
                continue
            if line.startswith("#"):
                self.comment(line, lineno)
            else:
                self.sample(line, lineno)
        for fam in self.order:
            self.check_family(fam)
        for want in self.args.expect:
            if want not in self.families or not self.families[want].samples:
                self.problem(0, "expected family %s is missing" % want)


def reference_parser():
    """The Prometheus client's parser, or None when it is not installed."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return None
    return text_string_to_metric_families


def cross_check(c, parse, text):
    """Compare every sample the reference parser reads with ours."""
    try:
        samples, types = {}, {}
        for fam in parse(text):
            for s in fam.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
                types[s.name] = fam.type
    except Exception as e:  # noqa: BLE001 (whatever the reference parser raises)
        c.problem(0, "the reference parser failed: %s" % e)
        return
    mine = {}
    for fam in c.order:
        for _, name, labels, value in fam.samples:
            mine[(name, tuple(sorted(labels.items())))] = value
    if set(mine) != set(samples):
        c.problem(0, "the reference parser read other series: %s"
                  % sorted(set(mine) ^ set(samples))[:5])
    for key, value in mine.items():
        other = samples.get(key)
        if other is not None and not (other == value or (math.isnan(other) and math.isnan(value))):
            c.problem(0, "the reference parser read %s as %r, not %r" % (key[0], other, value))
    for name, typ in types.items():
        if typ == "unknown" and c.args.require_type:
            c.problem(0, "the reference parser found no TYPE for %s" % name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="the exposition (default: stdin)")
    ap.add_argument("--label", action="append", default=[], metavar="NAME=VALUE",
                    help="every sample must carry this label")
    ap.add_argument("--label-exempt", action="append", default=[], metavar="FAMILY",
                    help="a family whose samples need not carry the --label labels")
    ap.add_argument("--expect", action="append", default=[], metavar="FAMILY",
                    help="this family must be present with samples")
    ap.add_argument("--allow-untyped", dest="require_type", action="store_false",
                    help="do not require a TYPE line per family")
    ap.add_argument("--allow-no-help", dest="require_help", action="store_false",
                    help="do not require a HELP line per family")
    ap.add_argument("--allow-counter-names", dest="counter_total", action="store_false",
                    help="do not require counters to be named *_total")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the cross-check with prometheus_client")
    args = ap.parse_args()
    for want in args.label:
        if "=" not in want:
            ap.error("--label needs NAME=VALUE")
    try:
        if args.file:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.buffer.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print("prom_check: cannot read the input: %s" % e, file=sys.stderr)
        return 1

    c = Checker(args)
    c.run(text)
    if args.reference:
        parse = reference_parser()
        if parse is None:
            print("prom_check: the reference parser is missing: apt-get install "
                  "python3-prometheus-client (and run this with Debian's /usr/bin/python3)",
                  file=sys.stderr)
            return 3
        if not c.problems:
            cross_check(c, parse, text)
    if c.problems:
        for p in c.problems:
            print("prom_check: %s" % p, file=sys.stderr)
        return 1
    nsamples = sum(len(f.samples) for f in c.order)
    print("ok: %d families, %d samples" % (len(c.order), nsamples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
