"""The README's commands: the test command CI runs is the one a reader is told to run, and no
command sends a user to a path they do not have."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MARKER = "<!-- ci: the test command"


def test_ci_runs_the_readme_test_command_verbatim():
    script = (ROOT / ".ci" / "run").read_text()
    assert MARKER in script
    awk = re.search(r"awk '(.*?)' README.md", script, flags=re.S).group(1)
    extracted = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    after_marker = README.split(MARKER)[1].split("```bash\n")[1].split("\n")[0]
    assert extracted == after_marker
    assert extracted.startswith("python3 -m venv .venv")
    assert 'pip install -e ".[dev]"' in extracted
    assert extracted.endswith("python -m pytest -q")


def test_no_command_points_at_the_shared_folder():
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        assert "../shared" not in block and "shared/data" not in block, block
