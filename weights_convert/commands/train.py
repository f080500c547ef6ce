"""`train`: run a Caffe solver (any of its six types) on a net the way Caffe would, from a solver prototxt."""
from __future__ import annotations

from pathlib import Path

NAME = "train"
OUT_IS_FOLDER = True
HELP = ("train a Caffe net from its solver prototxt exactly as Caffe's solver does (SGD, Nesterov, AdaGrad, "
        "RMSProp, AdaDelta, Adam); data-parallel under "
        "`torchrun --nproc_per_node N -m weights_convert train ...` (each iteration's passes shared by the ranks)")


def add_arguments(parser) -> None:
    parser.add_argument("--solver", required=True, help="solver prototxt; its net / train_net is read relative "
                        "to the solver file's folder")
    parser.add_argument("--weights", help="start weights (.caffemodel, .caffemodel.h5 or our .safetensors) "
                        "holding every learnable layer of the train net")
    parser.add_argument("--inputs", required=True, help="episodes .npz (keys '<e>/<top>', as `inputs` writes): "
                        "feeds the data layer's tops by name, one episode per forward pass, in order, cycling")
    parser.add_argument("--iters", type=int, help="train until this iteration (default: the solver's max_iter)")
    parser.add_argument("--snapshot-every", type=int, help="snapshot interval (default: the solver's snapshot)")
    parser.add_argument("--resume", help="a .solverstate to start from (ours or Caffe's); its weights file is "
                        "read from where the state names it or beside it")
    parser.add_argument("--seed", type=int, help="seed of the dropout masks (default: the solver's random_seed, "
                        "else random; always recorded in train.json)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, help="run folder: snapshot_iter_<n>.caffemodel / .solverstate, "
                        "losses.csv, train.json; the same command again resumes there")


def run(args) -> int:
    # Imported here: building the CLI's parser must not load torch (convert needs none).
    from weights_convert.runtime.allocator import keep_freed_blocks
    from weights_convert.files.provenance import sha256_file
    from weights_convert.train.data import EpisodeInputs
    from weights_convert.train.distributed import lead_process
    from weights_convert.train.run import TrainRequest, train
    from weights_convert.train.solver_file import read_solver

    keep_freed_blocks()  # a training process needs its peak on every pass: reuse it, do not refault it
    solver = read_solver(args.solver)
    data = EpisodeInputs(args.inputs)
    request = TrainRequest(solver=solver, data=data, data_digest=sha256_file(args.inputs), out=Path(args.out),
                           weights=args.weights, resume=args.resume, iterations=args.iters,
                           snapshot_every=args.snapshot_every, seed=args.seed, device=args.device,
                           progress=not args.no_progress)
    try:
        last = train(request)
    finally:
        data.close()
    if lead_process():  # under torchrun, rank 0 speaks for the job
        print(f"trained to iteration {args.iters if args.iters is not None else solver.param.max_iter}; "
              + (f"last snapshot {last}" if last else "no snapshot (snapshot_after_train: false)"))
    return 0
