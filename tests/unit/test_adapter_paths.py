"""adapter_paths: names, and confinement of untrusted paths to the adapter roots ('..', absolute, symlinks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trt_gateway import errors
from trt_gateway.adapter_paths import check_name, confine


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "adapters"
    (root / "sql").mkdir(parents=True)
    (root / "team" / "chat").mkdir(parents=True)
    (root / "file.txt").write_text("x")
    second = tmp_path / "more"
    (second / "two").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    sibling = tmp_path / "adapters-evil" / "a"  # shares the root's name as a string prefix
    sibling.mkdir(parents=True)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "alias").symlink_to(root / "sql", target_is_directory=True)
    link_root = tmp_path / "root-link"
    link_root.symlink_to(root, target_is_directory=True)
    return {"root": root, "second": second, "outside": outside, "sibling": sibling, "link_root": link_root}


def test_relative_path_resolves_under_the_first_root(tree) -> None:
    root = tree["root"]
    assert confine("sql", [str(root)]) == os.path.realpath(root / "sql")
    assert confine("team/chat", [str(root), str(tree["second"])]) == os.path.realpath(root / "team" / "chat")
    assert confine("./sql/", [str(root)]) == os.path.realpath(root / "sql")


def test_absolute_path_under_any_root(tree) -> None:
    roots = [str(tree["root"]), str(tree["second"])]
    assert confine(str(tree["second"] / "two"), roots) == os.path.realpath(tree["second"] / "two")


def test_symlink_inside_the_roots_resolves(tree) -> None:
    assert confine("alias", [str(tree["root"])]) == os.path.realpath(tree["root"] / "sql")


def test_root_given_through_a_symlink(tree) -> None:
    assert confine(str(tree["root"] / "sql"), [str(tree["link_root"])]) == os.path.realpath(tree["root"] / "sql")
    assert confine(str(tree["link_root"] / "sql"), [str(tree["root"])]) == os.path.realpath(tree["root"] / "sql")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../outside", "'..'"),
        ("sql/../../outside", "'..'"),
        ("sql/..", "'..'"),
        ("{outside}", "outside the adapter roots"),
        ("/", "outside the adapter roots"),
        ("{sibling}", "outside the adapter roots"),
        ("escape", "outside the adapter roots"),
        ("{root}/escape", "outside the adapter roots"),
        ("file.txt", "not a directory"),
        ("missing", "is relative, so it was looked for under each adapter root; none exists"),
        ("", "must not be empty"),
    ],
)
def test_refused(tree, path: str, why: str) -> None:
    path = path.format(outside=tree["outside"], sibling=tree["sibling"], root=tree["root"])
    with pytest.raises(errors.InvalidArgument) as err:
        confine(path, [str(tree["root"]), str(tree["second"])])
    assert why in err.value.message
    assert err.value.field == "path"


def test_no_roots_is_failed_precondition(tree) -> None:
    with pytest.raises(errors.FailedPrecondition) as err:
        confine(str(tree["root"] / "sql"), [])
    assert err.value.field == "path"
    assert "adapter root" in err.value.message


def test_field_name_is_passed_through(tree) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        confine("../x", [str(tree["root"])], field="executor.lora.adapters.sql")
    assert err.value.field == "executor.lora.adapters.sql"


def test_long_paths_are_truncated_in_messages(tree) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        confine("/" + "x" * 5000, [str(tree["root"])])
    assert len(err.value.message) < 600


@pytest.mark.parametrize("name", ["a", "sql", "Team.chat-v2_1", "0" * 64])
def test_good_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "..", "a" * 65, "é", "a\n"])
def test_bad_names(name: str) -> None:
    with pytest.raises(errors.InvalidArgument) as err:
        check_name(name, field="adapter")
    assert err.value.field == "adapter"
