"""The SQLAlchemy example of docs/clients.md runs as printed there, against
the test broker, and prints what the page says it prints."""

from __future__ import annotations

import contextlib
import io
import os
import re

DOCS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "docs", "clients.md"
)


def _example() -> str:
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Python: SQLAlchemy", 1)[1].split("### A complete example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_example_runs_and_prints_what_the_docs_say(broker_target: str) -> None:
    source = _example()
    assert "postgresql+sessionbroker://broker.internal:50051/" in source
    source = source.replace("broker.internal:50051", broker_target)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "docs/clients.md", "exec"), {"__name__": "docs_example"})
    assert out.getvalue().splitlines() == ["duplicate: 23505 customers_email_key", "total: 19.75"]
