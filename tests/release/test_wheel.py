"""The release as a user gets it: build the sdist and the wheel, check them, install the wheel, run the demo.

``python -m build`` makes the sdist, then the wheel from the sdist (so the sdist is complete enough to
build); ``twine check --strict`` reads both; the wheel carries ``py.typed`` and the emulator's assets and
nothing from tests; the wheel (not an editable install) goes into a clean venv with the constraints
file, and ``scripts/demo.py`` runs the example DAG from it against the emulator.

A few minutes: run with ``make test-wheel`` (``VIDEOQUERY_WHEEL=1``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import airflow_provider_videoquery

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_WHEEL") != "1",
        reason="builds and installs the release: set VIDEOQUERY_WHEEL=1",
    ),
    pytest.mark.timeout(900),
]

REPO = Path(__file__).resolve().parents[2]
VERSION = airflow_provider_videoquery.__version__
CONSTRAINTS = REPO / "constraints" / "airflow-3.3.2.txt"
PACKAGE = "airflow_provider_videoquery"


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command; return stdout and stderr together, or fail with them."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, command))} exited {result.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    log = run(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=REPO)
    # setuptools warns about deprecated metadata (a table-form license, say) while building.
    assert "Deprecat" not in log, log
    return out


def _artifacts(dist: Path) -> tuple[Path, Path]:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"airflow_provider_videoquery-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"airflow_provider_videoquery-{VERSION}.tar.gz"
    return wheel, sdist


def test_twine_accepts_both(dist: Path) -> None:
    wheel, sdist = _artifacts(dist)
    output = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    assert output.count("PASSED") == 2, output


def test_wheel_carries_the_package_and_nothing_from_tests(dist: Path) -> None:
    wheel, _ = _artifacts(dist)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"airflow_provider_videoquery-{VERSION}.dist-info/METADATA").decode()
        entry_points = archive.read(f"airflow_provider_videoquery-{VERSION}.dist-info/entry_points.txt")
    gallery = ("ui/static/page.html", "ui/static/gallery.js", "ui/static/gallery.css", "ui/static/icon.svg")
    for needed in (
        "py.typed",
        "emulator/assets/sample.mp4",
        "emulator/assets/thumb.jpg",
        "__init__.py",
        *gallery,
    ):
        assert f"{PACKAGE}/{needed}" in names, needed
    assert f"airflow_provider_videoquery-{VERSION}.dist-info/licenses/LICENSE" in names
    outside = sorted({name.split("/")[0] for name in names} - {PACKAGE, f"{PACKAGE}-{VERSION}.dist-info"})
    assert not outside, f"the wheel carries {outside}"
    assert not [n for n in names if "/tests/" in n or n.endswith(("conftest.py", ".pyc"))]
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {VERSION}" in metadata
    assert "github.com" not in metadata.lower()  # no invented project URLs
    assert b"provider_info = airflow_provider_videoquery:get_provider_info" in entry_points
    assert (
        b"[airflow.plugins]\nvideoquery_gallery = airflow_provider_videoquery.ui.plugin:VideoGalleryPlugin"
        in (entry_points)
    )


def test_sdist_carries_what_the_readme_links(dist: Path) -> None:
    _, sdist = _artifacts(dist)
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "constraints/airflow-3.3.2.txt"):
        assert needed in names, needed
    readme = (REPO / "README.md").read_text()
    for doc in sorted((REPO / "docs").glob("*.md")):
        if f"docs/{doc.name}" in readme:
            assert f"docs/{doc.name}" in names, doc.name


def test_the_demo_runs_from_the_installed_wheel(dist: Path, tmp_path: Path) -> None:
    wheel, _ = _artifacts(dist)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel, "-c", CONSTRAINTS, cwd=tmp_path, timeout=900)

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "PYTHON"))}
    probe = f"import {PACKAGE} as p; print(p.__file__, p.__version__)"
    where = run(python, "-c", probe, cwd=tmp_path, env=clean)
    assert where.startswith(str(env_dir)), f"the package came from {where}, not the wheel's venv"
    assert where.split()[1] == VERSION

    output = run(
        python,
        REPO / "scripts" / "demo.py",
        cwd=tmp_path,
        env={**clean, "VIDEOQUERY_DEMO_DIR": str(tmp_path / "demo")},
        timeout=600,
    )
    print(output)
    assert "DAG run success" in output
    assert "runs its trigger inline" in output
    assert "MP4 signature ok" in output
    assert "Deprecat" not in output  # nothing a demo user cannot act on
    stored = next((tmp_path / "demo" / "demo_output").glob("*.mp4"))
    assert stored.read_bytes()[4:8] == b"ftyp"
