"""The README's "In your own code" snippets run exactly as printed (each
snippet checks its own result against an independent reference: the closed
form of eq. 3-4, finite differences, the posterior's shape)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _snippets():
    text = open(README).read()
    section = text.split("## In your own code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_four_snippets():
    names = _snippets()
    assert len(names) == 4
    for needle in ("sac.update", "sum_tree.sample", "maac.pathwise_return", "dreamer.model_loss"):
        assert any(needle in s for s in names), needle


@pytest.mark.parametrize("index", range(4))
def test_snippet_runs_as_printed(index, capsys):
    code = _snippets()[index]
    exec(compile(code, f"README.md snippet {index + 1}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # each prints its result
