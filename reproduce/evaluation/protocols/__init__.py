"""The scoring protocols, one module each, and the one way commands take them: `--protocol` and
the options of every registered protocol, checked together.

Adding a protocol: a module with a `base.Protocol` subclass, and its line in REGISTRY (or
`register(cls)` from outside the kit)."""
from __future__ import annotations

from typing import Iterable

from reproduce.errors import ReproduceError
from reproduce.evaluation.protocols.base import DATA, EPISODES, SCORING, Option, Protocol
from reproduce.evaluation.protocols.hsnet import HSNet
from reproduce.evaluation.protocols.modern import Modern
from reproduce.evaluation.protocols.original import Original

REGISTRY: dict[str, type[Protocol]] = {cls.name: cls for cls in (Original, Modern, HSNet)}
DEFAULT = Original.name

__all__ = ["DATA", "DEFAULT", "EPISODES", "REGISTRY", "SCORING", "Option", "Protocol", "add_protocol_arguments",
           "protocol_from_args", "protocol_named", "protocol_of", "register"]


def register(cls: type[Protocol]) -> type[Protocol]:
    """Add a protocol (usable as a class decorator); commands offer it from then on."""
    REGISTRY[cls.name] = cls
    return cls


def _class(name: str) -> type[Protocol]:
    if name not in REGISTRY:
        raise ReproduceError(f"unknown scoring protocol {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def protocol_named(name: str) -> Protocol:
    """A protocol with its default options."""
    return _class(name)()


def protocol_of(record: dict) -> Protocol:
    """The protocol a run's manifest or summary records."""
    return _class(record["protocol"]).from_record(record)


def _options(command: str) -> list[tuple[type[Protocol], Option]]:
    """Every registered protocol's options a kind of command takes, each flag once."""
    seen: dict[str, tuple[type[Protocol], Option]] = {}
    for cls in REGISTRY.values():
        for option in cls.options:
            if command in option.commands:
                seen.setdefault(option.flag, (cls, option))
    return list(seen.values())


def add_protocol_arguments(parser, command: str = SCORING, extra_help: str = "") -> None:
    """`--protocol` and the options of every protocol that this kind of command (SCORING: evaluate,
    table-run; EPISODES: episodes; DATA: check-voc) takes."""
    listed = "; ".join(f"{name}: {cls.summary}" for name, cls in REGISTRY.items())
    parser.add_argument("--protocol", choices=list(REGISTRY), default=DEFAULT,
                        help=f"{listed} (default {DEFAULT}){extra_help}")
    for cls, option in _options(command):
        parser.add_argument(option.flag, type=None if option.type is not int else int,
                            help=f"protocol {cls.name}: {option.help}")


def protocol_from_args(args, command: str = SCORING, folds: Iterable[int] = ()) -> tuple[Protocol | None, list[str]]:
    """The protocol the arguments ask for and every problem with them: an option of another
    protocol, or one its own checks refuse for these folds."""
    cls = _class(args.protocol)
    given = [(owner, option, getattr(args, option.dest)) for owner, option in _options(command)
             if getattr(args, option.dest, None) is not None]
    foreign = [(owner, option) for owner, option, _ in given if option not in cls.options]
    if foreign:
        owners = " or ".join(sorted({owner.name for owner, _ in foreign}))
        return None, [f"{', '.join(option.flag for _, option in foreign)}: option(s) of --protocol {owners} only "
                      f"(protocol {cls.name}: {cls.summary})"]
    protocol = cls(**{option.field: option.type(value) for _, option, value in given})
    return protocol, protocol.problems(folds)
