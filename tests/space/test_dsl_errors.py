"""Bad search-space files give one ConfigError naming the file, the key, the value and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasplat.errors import ConfigError
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "search_spaces/cpu_small.yaml").read_text()


def _load(tmp_path, text):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return load_space(p), str(p)


@pytest.mark.parametrize(
    ("old", "new", "key", "fragment"),
    [
        ("blocks_per_module: 1\n  stem", "blocks_per_module: 1\n  colour: red\n  stem", "body.colour", "unknown key"),
        ('resolution: "[96, 128; 32]"', 'resolution: "[128, 96; 32]"', "body.resolution", "inverted"),
        ('resolution: "[96, 128; 32]"', 'resolution: "[96, 128; 20]"', "body.resolution", "does not divide"),
        ('resolution: "[96, 128; 32]"', "resolution: []", "body.resolution", "empty"),
        ('resolution: "[96, 128; 32]"', 'resolution: "[96, 128; 0]"', "body.resolution", "not positive"),
        ('resolution: "[96, 128; 32]"', "resolution: [98]", "body.resolution", "whole number of pixels"),
        ('resolution: "[96, 128; 32]"', "resolution: [40]", "body.resolution", "too small"),
        ('resolution: "[96, 128; 32]"', "resolution: [96.5]", "body.resolution", "not a whole number"),
        ('resolution: "[96, 128; 32]"', "resolution: {from: 96, to: 128}", "body.resolution", "not a range"),
        ('resolution: "[96, 128; 32]"', "resolution: fast", "body.resolution", "not a choice set"),
        ('branch2: {channels: "[16, 32; 16]", groups: [1, 2, 4]}', 'branch2: {channels: "[16, 24; 8]", groups: [1, 16]}', "body.branch2.groups", "does not divide channels"),
        ('stage3: {depth: "[1, 2; 1]"}', 'stage3: {depth: "[1, 2; 1]"}', None, None),
        ('feature_stage: [0, 1, 2, 3, 4]', "feature_stage: [0, 5]", "face.feature_stage", "feature stage 5"),
        ('roi_expansion: "[1.0, 1.4; 0.2]"', 'roi_expansion: "[1.0, 1.5; 0.2]"', "face.roi_expansion", "does not divide"),
        ('stem: {channels: "[16, 32; 16]"}', "stem: {channels: [16, 16, 32]}", "body.stem.channels", "listed twice"),
        ('branch1: {channels: "[8, 16; 8]", groups: [1, 2, 4]}', 'branch1: {channels: "[8, 16; 8]", groups: [1, 2, 2]}', "body.branch1.groups", "listed twice"),
    ],
)
def test_bad_space_is_one_clear_error(tmp_path, old, new, key, fragment):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    if key is None:
        _load(tmp_path, text)  # unchanged: loads
        return
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text)
    msg = str(e.value)
    assert str(tmp_path / "space.yaml") in msg
    assert key in msg, msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_depth_must_be_whole_modules(tmp_path):
    text = (ROOT / "search_spaces/zoomnas.yaml").read_text().replace('stage3: {depth: "[8, 16; 4]"}', 'stage3: {depth: "[8, 14; 2]"}', 1)
    with pytest.raises(ConfigError, match=r"body\.stage3\.depth.*depth 10 is not a whole number of HRNet modules"):
        _load(tmp_path, text)


def test_missing_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="hand: required key is missing"):
        _load(tmp_path, BASE.replace("hand: *head", ""))
    with pytest.raises(ConfigError, match="line"):
        _load(tmp_path, "name: x\nbody: [unclosed\n")
    with pytest.raises(ConfigError, match="file not found"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        _load(tmp_path, "- 1\n- 2\n")
