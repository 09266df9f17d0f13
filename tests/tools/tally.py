#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Count test results for `make unit` and `make test`.

    tally.py unit RESULTS BINARY...   run each cmocka binary (its output passes
                                      through), write the counts to RESULTS
    tally.py total RESULTS JUNIT_XML  add the unit counts in RESULTS to pytest's
                                      --junitxml report and print the total

The total is the run's last line, `tests: N passed, N failed`; CI reads that
form, so the per-part lines ("unit tests: ...", "integration tests: ...") use
two words before the colon and never match it.

A unit binary that dies before its summary (a crash, a sanitizer abort) counts
every test it announced ("Running N test(s)") and did not pass as failed, and at
least one. A missing RESULTS or report means that part did not run: it counts
as one failure, never as zero tests.

Exit status: 0 no failure, 1 a failure (or a part missing), 2 usage.
"""
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

RUNNING_RE = re.compile(r"^\[=+\] Running (\d+) test\(s\)\.", re.M)
OK_RE = re.compile(r"^\[ +OK +\] ", re.M)
SKIPPED_RE = re.compile(r"^\[ +SKIPPED +\] (?!\d+ test\(s\))", re.M)


def line(what, passed, failed, skipped=0):
    tail = f", {skipped} skipped" if skipped else ""
    return f"{what}: {passed} passed, {failed} failed{tail}"


def run_unit(binary):
    """Runs one cmocka binary, echoing its output; returns (passed, failed, skipped)."""
    print(f"== {binary}", flush=True)
    p = subprocess.run([binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode(errors="replace")
    sys.stdout.write(out)
    passed = len(OK_RE.findall(out))
    skipped = len(SKIPPED_RE.findall(out))
    m = RUNNING_RE.search(out)
    declared = int(m.group(1)) if m else 0
    failed = max(declared - passed - skipped, 0)
    if p.returncode != 0 and failed == 0:
        failed = 1
        print(f"{binary}: exit status {p.returncode}")
    return passed, failed, skipped


def unit(results, binaries):
    passed = failed = skipped = 0
    for b in binaries:
        p, f, s = run_unit(b)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    with open(results, "w") as f:
        json.dump({"passed": passed, "failed": failed, "skipped": skipped}, f)
    print(line("unit tests", passed, failed, skipped))
    return 1 if failed else 0


def junit_counts(path):
    """(passed, failed, skipped) from a pytest --junitxml report: a test case
    with a failure or an error (also one in teardown) failed."""
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def total(results, report):
    passed = failed = 0
    try:
        with open(results) as f:
            u = json.load(f)
        passed, failed = u["passed"], u["failed"]
    except (OSError, ValueError, KeyError) as e:
        print(f"unit tests: no results ({e})")
        failed += 1
    try:
        p, f, s = junit_counts(report)
        print(line("integration tests", p, f, s))
        passed, failed = passed + p, failed + f
    except (OSError, ET.ParseError) as e:
        print(f"integration tests: no results ({e})")
        failed += 1
    print(line("tests", passed, failed))
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "unit":
        return unit(argv[2], argv[3:])
    if len(argv) == 4 and argv[1] == "total":
        return total(argv[2], argv[3])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
