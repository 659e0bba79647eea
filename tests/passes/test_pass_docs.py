"""docs/passes.md's table of the pipeline lists every pass, in the order gc.compile runs them
(it once left out `collectives`)."""

import re
from pathlib import Path

from graphc.passes import PASS_NAMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "passes.md"


def test_the_pass_table_lists_the_pipeline_in_order():
    text = DOC.read_text()
    table = text.split("| pass | what it does | where |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert listed == list(PASS_NAMES)
