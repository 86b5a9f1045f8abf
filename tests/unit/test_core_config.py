"""Configuration loading and strict YAML: pure logic, no backend."""

from pathlib import Path

import pytest

from mecorch.kernel import config
from mecorch.kernel.errors import InvalidInput
from mecorch.kernel.yamlsafe import load_yaml

REPO = Path(__file__).resolve().parents[2]


def test_documented_default_equals_embedded_default():
    # config/mecorch.yaml is what users read; it must not drift from the code.
    assert load_yaml((REPO / "config" / "mecorch.yaml").read_text()) == config.DEFAULT


def test_driver_sections_get_paths_and_host_id():
    cfg = config.load()
    cim = cfg["hosts"][0]["cim"]
    assert cim["host_id"] == "default"
    assert cim["state_dir"] == "/var/lib/mecorch/hosts/default"
    assert cim["run_dir"] == "/run/mecorch/default"


def test_user_file_overlays_default(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("api: {listen: 127.0.0.1:9999}\nstate_dir: /tmp/x\n")
    cfg = config.load(f)
    assert cfg["api"]["listen"] == "127.0.0.1:9999"
    assert cfg["api"]["max_body_bytes"] == 1048576       # kept from default
    assert cfg["hosts"][0]["vim"]["state_dir"] == "/tmp/x/hosts/default"


def test_duplicate_host_ids_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("hosts: [{id: a}, {id: a}]\n")
    with pytest.raises(InvalidInput, match="unique id"):
        config.load(f)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read config"):
        config.load(tmp_path / "nope.yaml")


def test_yaml_object_tags_refused():
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_yaml("!!python/object/apply:os.system ['true']")


def test_yaml_billion_laughs_refused():
    doc = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):               # the classic: 9 levels of 9 references
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        doc += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    with pytest.raises(InvalidInput, match="aliases"):
        load_yaml(doc)


def test_yaml_size_limit():
    with pytest.raises(InvalidInput, match="larger than"):
        load_yaml("a: " + "x" * (2 << 20))


def test_yaml_duplicate_keys_refused():
    with pytest.raises(InvalidInput, match="twice"):
        load_yaml("appDId: a\nappName: x\nappDId: b\n")
