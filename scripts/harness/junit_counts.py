"""Print "<passed> <failed>" from a pytest JUnit XML report (skips count as failures:
a skipped test proves nothing, so the suite must not have any)."""

import sys
import xml.etree.ElementTree as ET

suites = ET.parse(sys.argv[1]).getroot()  # noqa: S314 - our own pytest report, not untrusted XML
passed = failed = 0
for case in suites.iter("testcase"):
    if any(child.tag in ("failure", "error", "skipped") for child in case):
        failed += 1
    else:
        passed += 1
print(passed, failed)
