"""Write constraints.txt: the exact runtime dependency set the image installs.

    python scripts/gen_constraints.py

Resolves the package's runtime dependencies (no dev extras) with pip, without
installing anything, and pins every one. The Dockerfile installs with
``-c constraints.txt`` so an image build is reproducible; rerun this to take
newer versions (tests/integration/test_container.py checks the pins against pyproject).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                str(REPO),
            ],
            check=True,
        )
        resolved = json.loads(report.read_text())["install"]
    pins = sorted(
        (item["metadata"]["name"].lower(), item["metadata"]["version"])
        for item in resolved
        if item["metadata"]["name"].lower() != "lookback"
    )
    lines = [
        "# The image's runtime dependencies, pinned: scripts/gen_constraints.py writes this.",
        *(f"{name}=={version}" for name, version in pins),
    ]
    (REPO / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
