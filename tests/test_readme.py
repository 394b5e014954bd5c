"""The README's mapped example runs as written (S3 swapped for a local folder): each prompt gets its file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from tests.airflow_helpers import load_dag, read_xcom, use_dags_folder
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _block(marker: str) -> str:
    (block,) = [b for b in BLOCKS if marker in b]
    return block


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_mapped_example_ties_each_prompt_to_its_file(
    airflow_db: str, emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1))
    imports = _block("def make_video():").split("\n\n")[0]  # the first example's imports
    source = f"{imports}\n{_block('.expand(')}"
    s3 = 'destination="s3://my-bucket/videos/", destination_conn_id="aws_default"'
    assert s3 in source
    source = source.replace(s3, f'destination="file://{tmp_path}/videos/"')
    source = source.replace("make_videos()\n", "dag = make_videos()\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "readme_mapped.py").write_text(source)
    use_dags_folder(monkeypatch, dags)

    dag_run = load_dag(dags / "readme_mapped.py").test()

    assert dag_run.state == DagRunState.SUCCESS
    by_prompt = read_xcom(dag_run, "report")
    prompts = ["a cow flying over farmland", "a paper boat drifting down a rainy street"]
    assert list(by_prompt) == prompts
    for prompt, uri in by_prompt.items():
        video_task_id = emulator_task_for(emulator, prompt)
        assert uri == f"file://{tmp_path}/videos/{video_task_id.replace(':', '_')}.mp4"
        assert Path(uri.removeprefix("file://")).read_bytes()[4:8] == b"ftyp"


def emulator_task_for(emulator: Any, prompt: str) -> str:
    """The id of the one task the emulator created for ``prompt``."""
    created = {r.task_id for r in emulator.requests if r.route == "create" and r.task_id}
    (task_id,) = [t for t in created if emulator.task(t).body.get("prompt") == prompt]
    return str(task_id)
