"""A solver prototxt and the train net it names, checked up front as Caffe's Solver::Init does."""
from __future__ import annotations

import os
from dataclasses import dataclass

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net, load_solver, upgrade_net
from weights_convert.formats.schema import pb
from weights_convert.train.learning_rate import check_policy
from weights_convert.train.solvers import check_solver_type

_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")


@dataclass
class SolverFile:
    path: str
    param: pb.SolverParameter
    net: pb.NetParameter
    net_source: str            # the train net's file, or "<path>:field" for an inline net

    def notes(self) -> list[str]:
        """What Caffe would do with this solver that the kit does not (none of it changes the
        training trajectory)."""
        p, notes = self.param, []
        if p.test_interval and (len(p.test_net) or len(p.test_net_param) or p.HasField("net") or p.HasField("net_param")):
            notes.append("test nets are not run (test_interval); they do not change the training")
        if p.snapshot_format == pb.SolverParameter.HDF5:
            notes.append("snapshots are written as binary .caffemodel/.solverstate, not HDF5 (snapshot_format)")
        if p.HasField("solver_mode") or p.HasField("device_id"):
            notes.append("solver_mode/device_id are ignored: the device is --device")
        return notes

    @property
    def level(self) -> int:
        return int(self.param.train_state.level)

    @property
    def stages(self) -> list[str]:
        return list(self.param.train_state.stage)


def read_solver(path: str | os.PathLike) -> SolverFile:
    """Parse `path`; its `net` / `train_net` file is read relative to the solver file's folder."""
    path = os.fspath(path)
    param = load_solver(path)
    given = [f for f in _NET_FIELDS if param.HasField(f)]
    if len(given) != 1:
        raise CaffeFormatError(f"{path}: give the train net in exactly one of {', '.join(_NET_FIELDS)} "
                               f"(found {', '.join(given) or 'none'})")
    check_solver_type(param, path)
    check_policy(param, path)
    for name in ("iter_size", "average_loss"):
        if getattr(param, name) < 1:
            raise CaffeFormatError(f"{path}: {name} must be >= 1 (got {getattr(param, name)})")
    if param.snapshot < 0 or param.max_iter < 0:
        raise CaffeFormatError(f"{path}: snapshot and max_iter must not be negative")
    field = given[0]
    if field in ("net_param", "train_net_param"):
        net = pb.NetParameter()
        net.CopyFrom(getattr(param, field))
        return SolverFile(path, param, upgrade_net(net, f"{path}:{field}"), f"{path}:{field}")
    net_path = getattr(param, field)
    if not os.path.isabs(net_path):
        net_path = os.path.join(os.path.dirname(os.path.abspath(path)), net_path)
    if not os.path.isfile(net_path):
        raise CaffeFormatError(f"{path}: its {field} {getattr(param, field)!r} is not a file "
                               f"(looked for {net_path}, relative to the solver's folder)")
    return SolverFile(path, param, load_net(net_path), net_path)
