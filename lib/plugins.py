"""What every plug-in registry shares: parts found by module name, and
typed configs filled from parsed flags.

lib/optim, lib/pruning and lib/trackers each find their parts as the
modules of their package (`lib/optim/adamwspam.py` is `--optimizer
adamwspam`); names starting with "_" are shared helpers, not parts.  A
part's config is a frozen dataclass whose fields are named after its flags
(lib/options.py: SPAM_THETA -> --spam-theta -> spam_theta), filled by
`from_flags`.
"""

import dataclasses
import importlib
import pkgutil
from typing import ClassVar, Protocol


def module_names(package, suffix=""):
    """The parts of `package` (a module object): its modules not starting
    with "_" (and ending with `suffix`, removed from the name), sorted."""
    found = (info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))
    return tuple(sorted(name[: len(name) - len(suffix)] for name in found if name.endswith(suffix)))


def part_module(package, name, flag, suffix=""):
    """The module of part `name` of `package`, imported now; ValueError
    naming `flag` and the valid names when there is none."""
    names = module_names(package, suffix)
    if name not in names:
        raise ValueError(f"{flag} {name!r} is unknown; choose one of {', '.join(names)}")
    return importlib.import_module(f"{package.__name__}.{name}{suffix}")


class PluginConfig(Protocol):
    """The typed config of one plug-in (e.g. lib/optim/<name>.py's Config):
    a dataclass of its own options."""

    __dataclass_fields__: ClassVar[dict]


def from_flags(cls, flags, **derived):
    """An instance of the dataclass `cls` whose fields take the values of the
    parsed flags of the same names (`flags`: a dict, e.g. vars(args)).
    Fields marked `metadata={"derived": True}` are left to the class, or
    given as keywords (`derived`): a value another config owns."""
    return cls(**{field.name: flags[field.name] for field in dataclasses.fields(cls)
                  if not field.metadata.get("derived")}, **derived)


def fixed_on_resume(config):
    """{field: value} of the fields of `config` marked
    `metadata={"fixed_on_resume": True}`: what decides what the part's
    saved state means (AdamWPrune's score), so --resume must keep it."""
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)
            if field.metadata.get("fixed_on_resume")}
