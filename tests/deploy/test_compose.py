"""`compose.yaml` against the Compose Specification's JSON schema, with no Compose and no network:
the schema is the copy vendored by the maintained PyPI package `check-jsonschema`
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, from the compose-spec project, Apache
License 2.0: `vendor/licenses/LICENSE.compose-spec` next to it), validated with `jsonschema`."""
from __future__ import annotations

import copy
import json
from importlib.resources import files

import pytest
import yaml
from docker_harness import REPO, interpolate
from jsonschema import Draft202012Validator

VENDOR = files("check_jsonschema.builtin_schemas.vendor")
ENV = {"JUPYTER_TOKEN": "0123abcd", "UID": "1000"}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads((VENDOR / "compose-spec.json").read_text())
    assert "Apache License" in (VENDOR / "licenses/LICENSE.compose-spec").read_text()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_compose_file_is_valid_as_written_and_interpolated(validator):
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())    # `<<: *image` merged
    assert _errors(validator, compose) == []
    assert _errors(validator, interpolate(compose, ENV)) == []


def test_the_schema_check_can_fail(validator):
    "Typical slips are caught, so a clean result above means something."
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    slips = {"a misspelt key": ("volume", ["./data:/app/data"]),
             "a port as a mapping": ("ports", [{"published": "x", "bogus": 1}]),
             "a string for a list": ("env_file", 42)}
    for what, (key, value) in slips.items():
        broken = copy.deepcopy(compose)
        broken["services"]["stockstock"][key] = value
        assert _errors(validator, broken), what


def test_jupyterlab_refuses_to_start_without_a_token():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    with pytest.raises(ValueError, match="JUPYTER_TOKEN"):
        interpolate(compose["services"]["jupyter"], {})
    lab = interpolate(compose["services"]["jupyter"], ENV)
    assert lab["environment"]["JUPYTER_TOKEN"] == "0123abcd"
    assert interpolate(compose["services"]["stockstock"], {})["command"][-1] == \
        "scheduled/sim.yaml"                        # the default parameters file
