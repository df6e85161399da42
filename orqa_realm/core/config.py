"""Settings: frozen dataclasses whose fields are the flags of the commands that read them.

A setting is declared once, as a field with `setting(default, help)`, on the dataclass of the
part of the code that reads it (a task, the loop, the index); `nested(...)` embeds another
settings dataclass, whose settings keep their own flag names. A command binds the dataclasses it
reads to absl flags (`FlagBinder.bind`) and builds them back after parsing (`FlagBinder.build`).

Every bound flag defaults to None ("not given"), so that the dataclass default is the only
default: a flag given on the command line or in a flagfile replaces it, and `--helpfull` shows
each group's default in the help text. One flag name may be read by several groups (every
retriever task reads `--block_store`); it is defined once and listed under each group by
`--helpfull`. `FlagBinder.check_read` refuses a flag that was given but that none of the groups
the command reads for this run declare, naming the flag, the run and who does read it.
"""

from __future__ import annotations

import collections
import dataclasses
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from absl import flags

from orqa_realm.core.errors import InputError


def setting(default: Any = dataclasses.MISSING,
            help: str = "",  # pylint: disable=redefined-builtin
            *, flag: str | None = None) -> Any:
  """A dataclass field bound to the flag `--NAME` (the field's name, or `flag`)."""
  if not help:
    raise ValueError("a setting needs help text")
  return dataclasses.field(default=default, metadata={"help": help, "flag": flag})


def nested(default: Any) -> Any:
  """A field holding another settings dataclass (`default`: an instance of it), whose settings
  are flags of their own names."""
  return dataclasses.field(default=default, metadata={"nested": True})


class Setting(NamedTuple):
  """One bindable setting of a dataclass, with its place in nested ones."""
  path: tuple[str, ...]  # field names from the outer dataclass down
  flag: str
  kind: Any  # the field's type
  help: str
  default: Any  # the dataclass default (MISSING when required)


def _resolved_hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def settings_of(cls: type, default: Any = None, path: tuple[str, ...] = ()) -> Iterator[Setting]:
  """The bindable settings of dataclass `cls` (with defaults from the instance `default`, if
  given), nested ones flattened."""
  hints = _resolved_hints(cls)
  for field in dataclasses.fields(cls):
    if default is not None:
      value = getattr(default, field.name)
    elif field.default is not dataclasses.MISSING:
      value = field.default
    else:
      value = dataclasses.MISSING
    if field.metadata.get("nested"):
      yield from settings_of(hints[field.name], value, path + (field.name,))
    elif "help" in field.metadata:
      yield Setting(path + (field.name,), field.metadata["flag"] or field.name,
                    hints[field.name], field.metadata["help"], value)


def _literal_choices(kind: Any) -> list[str] | None:
  if typing.get_origin(kind) is Literal:
    return [str(choice) for choice in typing.get_args(kind)]
  return None


def _define(name: str, kind: Any, help_text: str, module_name: str,
            flag_values: flags.FlagValues) -> None:
  """Defines `--name` (default None) of the absl type that fits `kind`."""
  common = dict(name=name, default=None, help=help_text, flag_values=flag_values,
                module_name=module_name)
  choices = _literal_choices(kind)
  if choices is not None:
    flags.DEFINE_enum(enum_values=choices, **common)
  elif kind is bool:
    flags.DEFINE_bool(**common)
  elif kind is int:
    flags.DEFINE_integer(**common)
  elif kind is float:
    flags.DEFINE_float(**common)
  elif kind is str:
    flags.DEFINE_string(**common)
  elif typing.get_origin(kind) is tuple:
    flags.DEFINE_list(**common)
  else:
    raise TypeError(f"setting --{name}: no flag type for {kind!r}")


def _convert(value: Any, kind: Any) -> Any:
  """A parsed flag value as the field's type (lists become tuples of the element type)."""
  if typing.get_origin(kind) is tuple:
    element = typing.get_args(kind)[0]
    return tuple(element(item) for item in value)
  return value


def _show(value: Any) -> str:
  if value is dataclasses.MISSING:
    return "required"
  if isinstance(value, tuple):
    return ",".join(str(item) for item in value)
  return repr(value) if isinstance(value, str) else str(value)


def _replace_paths(instance: Any, values: Mapping[tuple[str, ...], Any]) -> Any:
  """`instance` with each (nested) field at a path of `values` set to its value, each dataclass
  replaced once, so that a check across its fields (`__post_init__`) sees all the new values
  together rather than one at a time."""
  direct, nested_values = {}, collections.defaultdict(dict)
  for (head, *rest), value in values.items():
    if rest:
      nested_values[head][tuple(rest)] = value
    else:
      direct[head] = value
  for head, inner in nested_values.items():
    direct[head] = _replace_paths(getattr(instance, head), inner)
  return dataclasses.replace(instance, **direct) if direct else instance


@dataclasses.dataclass(frozen=True)
class FlagGroup:
  """A settings dataclass bound under a group name (e.g. "task ict")."""
  name: str
  cls: type
  default: Any  # the instance whose values are the defaults
  settings: tuple[Setting, ...]

  @property
  def flag_names(self) -> frozenset[str]:
    return frozenset(setting.flag for setting in self.settings)


class FlagBinder:
  """Binds settings dataclasses to the flags of one command.

  `bind` only records groups; `define` (called by the command's entry point, before parsing)
  defines their flags, so that importing a command module defines nothing.
  """

  def __init__(self, command: str, flag_values: flags.FlagValues = flags.FLAGS):
    self.command = command
    self._flags = flag_values
    self._groups: dict[str, FlagGroup] = {}
    self._kinds: dict[str, Any] = {}
    self._defaults: dict[str, dict[str, str]] = {}  # flag -> group -> shown default
    self._base_help: dict[str, str] = {}
    self._defined = False

  def bind(self, group: str, cls: type, default: Any = None) -> FlagGroup:
    """Records the settings of `cls` as the flags of `group` (one flag per name across
    groups). `default`: an instance of `cls` holding this group's defaults (else the field
    defaults)."""
    if group in self._groups:
      raise ValueError(f"group {group!r} is bound twice")
    if self._defined:
      raise ValueError("bind every group before the flags are defined")
    settings = tuple(settings_of(cls, default))
    for item in settings:
      if self._kinds.setdefault(item.flag, item.kind) != item.kind:
        raise TypeError(f"--{item.flag} is bound as {self._kinds[item.flag]} and {item.kind}")
      self._base_help.setdefault(item.flag, item.help)
      self._defaults.setdefault(item.flag, {})[group] = _show(item.default)
    bound = FlagGroup(group, cls, default, settings)
    self._groups[group] = bound
    return bound

  def define(self) -> None:
    """Defines every bound flag (default None), listed under each group that reads it."""
    if self._defined:
      return
    for name, bound in self._groups.items():
      for item in bound.settings:
        if item.flag in self._flags:
          self._flags.register_flag_by_module(name, self._flags[item.flag])
        else:
          _define(item.flag, item.kind, self._help(item.flag), name, self._flags)
    self._defined = True

  def _help(self, flag: str) -> str:
    shown = self._defaults[flag]
    common = collections.Counter(shown.values()).most_common(1)[0][0]
    exceptions = "".join(f"; {group}: {value}" for group, value in sorted(shown.items())
                         if value != common)
    return f"{self._base_help[flag]} [default: {common}{exceptions}]"

  def group(self, name: str) -> FlagGroup:
    return self._groups[name]

  def given(self, flag: str) -> bool:
    """Whether `--flag` was given (on the command line or in a flagfile)."""
    return self._flags[flag].present > 0

  def value(self, flag: str) -> Any:
    """The parsed value of `--flag`, as its setting's type (None when not given)."""
    raw = self._flags[flag].value
    return None if raw is None else _convert(raw, self._kinds[flag])

  def given_values(self, group: str) -> dict[tuple[str, ...], Any]:
    """{field path: value} of the settings of `group` whose flags were given."""
    return {item.path: self.value(item.flag) for item in self._groups[group].settings
            if self._flags[item.flag].value is not None}

  def given_settings(self, group: str, field: str | None = None) -> dict[str, tuple[str, Any]]:
    """{field name: (flag, value)} of the settings of `group` (or of its nested settings
    dataclass `field`) whose flags were given."""
    prefix = () if field is None else (field,)
    return {item.path[-1]: (item.flag, self.value(item.flag))
            for item in self._groups[group].settings
            if item.path[:-1] == prefix and self._flags[item.flag].value is not None}

  def build(self, group: str, **fields: Any) -> Any:
    """The dataclass of `group`: its defaults, replaced by the flags given. `fields` supply the
    fields that are not settings, or replace whole fields (flags under them are then not read:
    the caller checks them, e.g. against a saved run)."""
    bound = self._groups[group]
    if bound.default is not None:
      instance = dataclasses.replace(bound.default, **fields)
    else:
      instance = bound.cls(**fields)
    return _replace_paths(instance, {path: value
                                     for path, value in self.given_values(group).items()
                                     if path[0] not in fields})

  def check_read(self, groups: Iterable[str], run: str) -> None:
    """Refuses a flag that was given but that no group in `groups` reads (`run` names what the
    command was asked to do, e.g. "train --task=ict")."""
    read = frozenset().union(*(self._groups[name].flag_names for name in groups))
    for flag in sorted(self._kinds):
      if self.given(flag) and flag not in read:
        readers = [name for name, bound in self._groups.items() if flag in bound.flag_names]
        raise InputError(f"--{flag} is not read by `{run}` (it is read by: "
                         f"{', '.join(readers)}); remove it", field=flag)

  def given_flags_text(self) -> str:
    """The flags given to this run, one per line, loadable with --flagfile."""
    lines = []
    for flag in sorted(self._kinds):
      if self.given(flag):
        lines.append(self._flags[flag].serialize())
    return "\n".join(lines) + "\n"


def check_minimum(flag: str, value: int | float, least: int | float) -> None:
  """Refuses `--flag=value` below `least`, naming the flag."""
  if value < least:
    raise InputError(f"--{flag}={value} must be at least {least}", field=flag)


def differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                prefix: str = "") -> list[str]:
  """'key: saved X, now Y' for each (nested) key whose values differ."""
  found = []
  for key in sorted(saved.keys() | current.keys()):
    old, new = saved.get(key), current.get(key)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
      found.extend(differences(old, new, f"{prefix}{key}."))
    elif old != new:
      found.append(f"{prefix}{key}: saved {old!r}, now {new!r}")
  return found


def settle(saved: Any, given: Mapping[str, tuple[str, Any]], *, fixed: Iterable[str],
           source: str) -> Any:
  """`saved` (settings read from a run or an index) with the `given` ones ({field: (flag,
  value)}, from the command line) applied: a given value of a `fixed` field must repeat the
  saved one, and is refused naming both when it does not; the others replace the saved ones."""
  fixed = frozenset(fixed)
  for name, (flag, value) in sorted(given.items()):
    if name in fixed and getattr(saved, name) != value:
      raise InputError(f"--{flag}={_show(value)} contradicts {source}, whose {name} is "
                       f"{_show(getattr(saved, name))}", field=flag)
  return dataclasses.replace(saved, **{name: value for name, (_, value) in given.items()
                                       if name not in fixed})
