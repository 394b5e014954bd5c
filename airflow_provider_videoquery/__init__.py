"""Apache Airflow provider for AI video generation gateways (veo, sora-2, grok, vidu, OpenAI-style)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PACKAGE = "airflow_provider_videoquery"


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` and the connection form know about this provider."""
    return {
        "package-name": "airflow-provider-videoquery",
        "name": "Video Query",
        "description": "Create, wait for (deferrable) and download AI-generated videos from gateways "
        "such as yunwu and anyapi: veo, veo3.1, sora-2, grok, vidu.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Video Query",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Video Query", "python-modules": [f"{_PACKAGE}.hooks.videoquery"]}],
        "triggers": [
            {"integration-name": "Video Query", "python-modules": [f"{_PACKAGE}.triggers.videoquery"]}
        ],
        "sensors": [
            {"integration-name": "Video Query", "python-modules": [f"{_PACKAGE}.sensors.videoquery"]}
        ],
        "operators": [
            {"integration-name": "Video Query", "python-modules": [f"{_PACKAGE}.operators.videoquery"]}
        ],
        "connection-types": [
            {
                "connection-type": "videoquery",
                "hook-class-name": f"{_PACKAGE}.hooks.videoquery.VideoQueryHook",
                "hook-name": "Video Query (AI video gateway)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://yunwu.ai",
                        "password": "sk-…",
                        "extra": '{"route": "unified", "timeout": 60, "connect_timeout": 10}',
                    },
                },
                # Airflow's form writes every field into ``extra`` (an untouched one as its
                # ``default``, or null): defaults here are the hook's own, null reads as "not set".
                "conn-fields": {
                    "route": {
                        "label": "Default route",
                        "description": "Where the gateway answers status queries: unified "
                        "(/v1/video/query?id=, most gateways), vidu-native, openai (/v1/videos/{id}) "
                        "or new-api (/v1/video/generations).",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["unified", "vidu-native", "openai", "new-api"],
                            "default": "unified",
                        },
                    },
                    "timeout": {
                        "label": "Read timeout (s)",
                        "description": "How long one answer may take.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 60},
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (s)",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 10},
                    },
                    "extra_headers": {
                        "label": "Extra headers (JSON)",
                        "description": 'Optional, e.g. {"X-Forwarded-Host": "example.com"}',
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Turn off only for a self-signed gateway you trust.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "verify_download_ssl": {
                        "label": "Verify TLS of video hosts",
                        "description": "Other hosts than the gateway (CDNs); turn off only if you must.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "proxy": {
                        "label": "Proxy URL",
                        "description": "e.g. http://proxy:3128; wins over HTTPS_PROXY, NO_PROXY applies.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "allowed_download_hosts": {
                        "label": "Allowed download hosts",
                        "description": "Optional, comma-separated; empty allows any http(s) host.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
