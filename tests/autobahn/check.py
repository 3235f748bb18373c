#!/usr/bin/env python3
"""Grades an Autobahn|Testsuite fuzzingclient report (wstest always exits 0).

Usage: check.py [--min-cases N] path/to/reports/servers/index.json

Prints, per agent, the number of cases per grade for `behavior` (the protocol exchange) and
`behaviorClose` (the closing handshake), then every case whose grade is not OK, NON-STRICT
or INFORMATIONAL, with its description and wstest's explanation.

Exit status: 0 when every case of sections 1-10 is OK / NON-STRICT / INFORMATIONAL in both
columns and the report holds the expected cases; 1 otherwise; 2 when the report is missing
or unreadable. Cases of other sections (12.*, 13.*: permessage-deflate) are listed but do not
fail the run.
"""

import argparse
import html
import json
import os
import re
import sys
from collections import Counter

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
# Every grade wstest emits, in display order; unknown grades are appended after these.
GRADES = PASSING + ("UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT")
GRADED_SECTIONS = range(1, 11)
# Cases per section in autobahntestsuite 25.10.1 for `1.*` ... `10.*` (301 in all; there is
# no section 8). A report with fewer means wstest stopped early or matched no cases.
EXPECTED_PER_SECTION = {1: 16, 2: 11, 3: 7, 4: 10, 5: 20, 6: 145, 7: 37, 9: 54, 10: 1}


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def section(case_id):
    head = case_id.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def plain(text, limit=160):
    """Case descriptions are HTML; keep one short line of text."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", text or ""))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def case_details(report_dir, entry):
    """Description and wstest's verdict texts from the per-case report, when present."""
    path = os.path.join(report_dir, entry.get("reportfile") or "")
    try:
        with open(path, encoding="utf-8") as f:
            rep = json.load(f)
    except (OSError, ValueError):
        return {}
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", help="reports/servers/index.json written by wstest")
    ap.add_argument(
        "--min-cases",
        type=int,
        help="least number of cases the report must hold (replaces the per-section check, "
        "for runs narrowed with AUTOBAHN_CASES)",
    )
    args = ap.parse_args()

    try:
        with open(args.index, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print(f"autobahn check: cannot read {args.index}: {e}", file=sys.stderr)
        return 2
    if not isinstance(index, dict) or not index:
        print(f"autobahn check: {args.index} holds no agents (empty run?)", file=sys.stderr)
        return 2
    report_dir = os.path.dirname(os.path.abspath(args.index))

    ok = True
    for agent in sorted(index):
        cases = index[agent]
        print(f"Autobahn|Testsuite fuzzingclient report for agent {agent!r}: {len(cases)} cases")

        # ---- grade table
        counts = {col: Counter(c.get(col, "?") for c in cases.values())
                  for col in ("behavior", "behaviorClose")}
        seen = set(counts["behavior"]) | set(counts["behaviorClose"])
        rows = [g for g in GRADES if g in seen] + sorted(seen - set(GRADES))
        width = max([len("grade")] + [len(g) for g in rows])
        print(f"  {'grade':<{width}}  {'behavior':>8}  {'behaviorClose':>13}")
        for g in rows:
            print(f"  {g:<{width}}  {counts['behavior'][g]:>8}  {counts['behaviorClose'][g]:>13}")
        print(f"  {'total':<{width}}  {sum(counts['behavior'].values()):>8}  "
              f"{sum(counts['behaviorClose'].values()):>13}")

        # ---- completeness guard
        per_section = Counter(section(cid) for cid in cases)
        if args.min_cases is not None:
            if len(cases) < args.min_cases:
                ok = False
                print(f"  INCOMPLETE: {len(cases)} cases, expected at least {args.min_cases}")
        else:
            for sec, want in sorted(EXPECTED_PER_SECTION.items()):
                if per_section[sec] < want:
                    ok = False
                    print(f"  INCOMPLETE: section {sec} has {per_section[sec]} cases, "
                          f"expected {want}")

        # ---- cases that are not passing
        bad = [cid for cid, c in cases.items()
               if c.get("behavior") not in PASSING or c.get("behaviorClose") not in PASSING]
        if bad:
            print(f"  {len(bad)} case(s) not OK / NON-STRICT / INFORMATIONAL:")
        for cid in sorted(bad, key=case_key):
            c = cases[cid]
            graded = section(cid) in GRADED_SECTIONS
            if graded:
                ok = False
            rep = case_details(report_dir, c)
            tag = "" if graded else "  (outside 1-10: not graded)"
            print(f"  - {cid}: behavior={c.get('behavior')} behaviorClose={c.get('behaviorClose')}"
                  f" remoteCloseCode={c.get('remoteCloseCode')}{tag}")
            if rep.get("description"):
                print(f"      case:        {plain(rep['description'])}")
            if rep.get("expectation"):
                print(f"      expected:    {plain(rep['expectation'])}")
            if c.get("behavior") not in PASSING and rep.get("result"):
                print(f"      result:      {plain(rep['result'])}")
            if c.get("behaviorClose") not in PASSING and rep.get("resultClose"):
                print(f"      resultClose: {plain(rep['resultClose'])}")
            if c.get("reportfile"):
                print(f"      report:      {os.path.join(report_dir, c['reportfile'])}")

    print("autobahn check: " + ("PASS" if ok else "FAIL")
          + " (sections 1-10; passing grades: " + ", ".join(PASSING) + ")")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
