"""The package as Airflow sees it: provider discovery, the connection type and its form."""

from __future__ import annotations

import importlib
import json
import re
from importlib import metadata
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_videoquery
from airflow_provider_videoquery import get_provider_info
from airflow_provider_videoquery.hooks._http import GatewayConfig, Route
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from tests.conftest import REPO


def test_entry_point_is_registered() -> None:
    points = entry_points(group="apache_airflow_provider")
    ours = [p for p in points if p.value == "airflow_provider_videoquery:get_provider_info"]
    assert len(ours) == 1
    assert ours[0].load()() == get_provider_info()


def test_provider_info_names_the_distribution_and_every_module() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-videoquery"
    assert info["versions"] == [airflow_provider_videoquery.__version__]
    for section in ("hooks", "triggers", "sensors", "operators"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == VideoQueryHook.conn_type == "videoquery"
    module, _, name = conn_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is VideoQueryHook


def test_airflow_discovers_the_provider_and_its_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-videoquery" in manager.providers
    hook = manager.hooks["videoquery"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_videoquery.hooks.videoquery.VideoQueryHook"
    assert hook.connection_testable


def test_connection_form_is_declared_the_airflow_32_way() -> None:
    from airflow import __version__
    from airflow.providers_manager import ProvidersManager
    from packaging.version import Version

    if Version(__version__) < Version("3.2"):
        pytest.skip("provider-info connection forms arrived in Airflow 3.2")
    manager = ProvidersManager()
    behaviour = manager.field_behaviours["videoquery"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    fields = set(manager.connection_form_widgets)
    for name in (
        "route",
        "timeout",
        "extra_headers",
        "verify_ssl",
        "verify_download_ssl",
        "proxy",
        "allowed_download_hosts",
    ):
        assert f"extra__videoquery__{name}" in fields


@pytest.mark.parametrize("key", ["route", "extra__videoquery__route"])
def test_form_fields_are_read_under_either_name(key: str) -> None:
    config = GatewayConfig.from_connection("c", "https://gw", "sk-1", {key: "vidu-native"})
    assert config.route is Route.VIDU_NATIVE


def test_connection_form_offers_every_route() -> None:
    from airflow_provider_videoquery import get_provider_info
    from airflow_provider_videoquery.routes import Route

    form = get_provider_info()["connection-types"][0]["conn-fields"]["route"]
    assert form["schema"]["enum"] == [r.value for r in Route]  # no None: the UI shows it as "null"


def _conn_fields() -> dict[str, Any]:
    (conn_type,) = get_provider_info()["connection-types"]
    return dict(conn_type["conn-fields"])


def test_one_version_everywhere() -> None:
    """The package, the provider info, the installed metadata and the changelog name one version."""
    version = airflow_provider_videoquery.__version__
    assert get_provider_info()["versions"] == [version]
    assert metadata.version("airflow-provider-videoquery") == version  # pyproject reads __version__
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (\S+)", changelog, flags=re.MULTILINE)
    assert releases[0] == version, f"CHANGELOG.md's newest entry is {releases[0]}, the package {version}"


def test_provider_info_is_valid_and_links_nothing_invented() -> None:
    import jsonschema
    from airflow import __file__ as airflow_init

    schema = json.loads((Path(airflow_init).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    # No project site exists: no URL anywhere in the provider info or the package metadata.
    assert all("external-doc-url" not in entry for entry in info["integrations"])
    assert "github.com" not in json.dumps(info)
    assert "Project-URL" not in metadata.metadata("airflow-provider-videoquery")


def test_form_defaults_are_the_hooks_defaults() -> None:
    """The form shows (and an untouched form stores) the defaults the hook uses, never a literal null."""
    fields = _conn_fields()
    defaults = GatewayConfig.model_fields
    assert fields["route"]["schema"]["default"] == defaults["route"].default.value
    assert fields["timeout"]["schema"]["default"] == defaults["read_timeout"].default
    assert fields["connect_timeout"]["schema"]["default"] == defaults["connect_timeout"].default
    assert fields["verify_ssl"]["schema"]["default"] is defaults["verify_ssl"].default
    assert fields["verify_download_ssl"]["schema"]["default"] is defaults["verify_download_ssl"].default


def test_what_an_untouched_form_stores_reads_as_the_defaults() -> None:
    # Airflow's form writes every conn-field into extra, each at its schema default (null if none).
    untouched = {name: field["schema"].get("default") for name, field in _conn_fields().items()}
    assert untouched == {
        "route": "unified",
        "timeout": 60,
        "connect_timeout": 10,
        "extra_headers": None,
        "verify_ssl": True,
        "verify_download_ssl": True,
        "proxy": None,
        "allowed_download_hosts": None,
    }
    stored = GatewayConfig.from_connection("c", "https://gw", "sk-1", untouched)
    assert stored == GatewayConfig.from_connection("c", "https://gw", "sk-1", {})
