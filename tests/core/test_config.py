"""Settings dataclasses bound to flags: one default, given flags replace it, nested settings keep
their names, an unread flag is refused, and saved settings are settled against given ones."""

import dataclasses
from typing import Literal

import pytest
from absl import flags

from orqa_realm.core import config
from orqa_realm.core.config import nested, setting
from orqa_realm.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class Inner:
  size: int = setting(8, "A size.")
  kind: Literal["a", "b"] = setting("a", "A kind.")
  scale: float = setting(1.0, "A scale.", flag="inner_scale")


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = setting("", "A name.")
  ks: tuple[int, ...] = setting((1, 5), "Cut-offs.")
  on: bool = setting(False, "A switch.")
  inner: Inner = nested(Inner())
  derived: int = 0  # not a setting: no flag


@dataclasses.dataclass(frozen=True)
class Other:
  size: int = setting(3, "Another reader of --size.")
  depth: int = setting(10, "A depth.")


@dataclasses.dataclass(frozen=True)
class Range:
  low: int = setting(0, "The low end.")
  high: int = setting(1, "The high end.")

  def __post_init__(self):
    if self.low > self.high:
      raise InputError(f"{self.low} exceeds {self.high}", field="low")


@pytest.fixture
def binder():
  binder = config.FlagBinder("command", flags.FlagValues())
  binder.bind("outer", Outer)
  binder.bind("other", Other)
  binder.define()
  return binder


def parse(binder, *argv):
  binder._flags(["command", *argv])  # pylint: disable=protected-access


def test_defaults_come_from_the_dataclass_and_given_flags_replace_them(binder):
  parse(binder)
  assert binder.build("outer") == Outer()
  parse(binder, "--name=x", "--ks=1,20", "--on", "--size=4", "--kind=b", "--inner_scale=2.5")
  assert binder.build("outer") == Outer(name="x", ks=(1, 20), on=True,
                                         inner=Inner(size=4, kind="b", scale=2.5))
  # One flag, read by two groups, each with its own default.
  assert binder.build("other") == Other(size=4)
  assert binder.given_settings("outer", "inner") == {
      "size": ("size", 4), "kind": ("kind", "b"), "scale": ("inner_scale", 2.5)}
  assert binder.given_settings("outer") == {
      "name": ("name", "x"), "ks": ("ks", (1, 20)), "on": ("on", True)}
  assert "derived" not in binder._flags  # pylint: disable=protected-access


def test_fields_given_to_build_are_not_replaced_by_flags(binder):
  parse(binder, "--size=4")
  assert binder.build("outer", inner=Inner(size=99)).inner.size == 99


def test_a_check_across_fields_sees_every_given_flag_at_once():
  binder = config.FlagBinder("command", flags.FlagValues())
  binder.bind("range", Range)
  binder.define()
  # Set one at a time, low=5 would be checked against the default high=1.
  parse(binder, "--low=5", "--high=9")
  assert binder.build("range") == Range(5, 9)
  parse(binder, "--low=5", "--high=4")
  with pytest.raises(InputError, match="5 exceeds 4"):
    binder.build("range")


def test_help_shows_each_groups_default(binder):
  defined = binder._flags  # pylint: disable=protected-access
  assert defined["size"].help == "A size. [default: 8; other: 3]"
  assert defined["ks"].help == "Cut-offs. [default: 1,5]"
  assert defined["name"].help == "A name. [default: '']"


def test_a_flag_no_read_group_declares_is_refused(binder):
  parse(binder, "--depth=3", "--name=x")
  binder.check_read(["outer", "other"], "command --mode=both")
  with pytest.raises(InputError, match=r"--depth is not read by `command --mode=outer` \(it is "
                                       r"read by: other\); remove it"):
    binder.check_read(["outer"], "command --mode=outer")


def test_a_flag_bound_with_two_types_is_a_programming_error():
  @dataclasses.dataclass(frozen=True)
  class Clash:
    size: str = setting("", "A size of another type.")

  binder = config.FlagBinder("command", flags.FlagValues())
  binder.bind("outer", Outer)
  with pytest.raises(TypeError, match="--size is bound as"):
    binder.bind("clash", Clash)


def test_saved_settings_accept_a_repeat_and_refuse_a_contradiction():
  saved = Inner(size=8, kind="b", scale=2.0)
  assert config.settle(saved, {"kind": ("kind", "b")}, fixed=("kind",), source="the run") == saved
  with pytest.raises(InputError, match=r"--kind='a' contradicts the run, whose kind is 'b'"):
    config.settle(saved, {"kind": ("kind", "a")}, fixed=("kind",), source="the run")
  # A setting that is not fixed may be changed.
  assert config.settle(saved, {"scale": ("inner_scale", 3.0)}, fixed=("kind",),
                       source="the run") == Inner(size=8, kind="b", scale=3.0)


def test_differences_name_nested_keys():
  assert config.differences({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 4}, "d": 3}) == [
      "a.c: saved 2, now 4"]
