"""The README's API example runs and means what it says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    sup, mask = scope["sup"], scope["mask"]
    n = scope["N"]
    assert sup.hint_idx.shape == (2, int(0.3 * n))
    assert (sup.seen ^ sup.masked).all()
    assert mask.shape[-1] == sup.hint_idx.shape[1] + scope["L"] + n
