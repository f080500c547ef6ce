"""`demo`: the whole pipeline without the authors' data: a synthetic VOC-layout data set, four
random-weight thin OSLSM caffemodels of the full upstream topology, conversion, 1-shot and 5-shot
evaluation of all folds, and the two tables, exactly as `table-run` writes them."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from reproduce.errors import raise_problems
from weights_convert.pascal5i import FOLDS, N_CLASSES

NAME = "demo"
HELP = "synthetic data + random thin OSLSM models through convert, evaluate and both tables (minutes on a CPU)"
NOTE = ("DEMO: synthetic images and random-weight thin models; the 'ours' numbers only show that the "
        "pipeline runs and are not comparable with the paper's.")
STAMP = ".oslsm-demo"  # marks a folder the demo made: it may delete and rewrite what is in it
# Image i holds class i % 20 + 1, so every class needs a query and 5 other supports (5-shot).
MIN_IMAGES = N_CLASSES * (5 + 1)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    parser.add_argument("--episodes", type=int, default=150, help="episodes per fold and shot count (default 150)")
    parser.add_argument("--images", type=int, default=300,
                        help=f"synthetic images (default 300, at least {MIN_IMAGES}: a query and 5 supports per class)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def make_demo_inputs(work: Path, images: int, seed: int, episodes: int) -> tuple[Path, Path]:
    """Synthetic VOC2012 and the four fold caffemodels under `work`, rebuilt with everything derived
    from them (conversions, cache, the runs beside `work`) when the recipe changed."""
    from reproduce.synthetic_voc import make_synthetic_voc
    from reproduce.tables import TABLES
    from weights_convert.atomic import atomic_write_text
    from weights_convert.oslsm.layout import OSLSMWidths
    from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel

    voc, models = work / "VOC2012", work / "caffemodels"
    recipe = {"images": images, "seed": seed, "episodes": episodes, "widths": list(OSLSMWidths.THIN.as_tuple())}
    stamp = work / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return voc, models
    # Another recipe, or a build that stopped half-way: start these inputs (and what was derived
    # from them) afresh. Everything here is generated, never user data.
    reports = [work.parent / f"{stem}_report" for stem, _ in TABLES.values()]
    for derived in (voc, models, work / "models", work.parent / "cache", work.parent / "runs", stamp, *reports):
        if derived.is_dir():
            shutil.rmtree(derived)
        elif derived.exists():
            derived.unlink()
    make_synthetic_voc(voc, images, seed)
    for fold in FOLDS:
        params = random_oslsm_params(OSLSMWidths.THIN, seed=seed + fold, hashing=True)
        write_oslsm_caffemodel(models / f"oslsm_thin_fold{fold}.caffemodel", params, net_name=f"oslsm_thin_fold{fold}")
    atomic_write_text(stamp, json.dumps(recipe) + "\n")
    return voc, models


def run(args) -> int:
    from reproduce.table_pipeline import ensure_converted, evaluate_folds, write_table_and_report
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.layout import OSLSMWidths
    from weights_convert.oslsm.spec import oslsm_deploy_net

    start = time.perf_counter()
    out = Path(args.out)
    refuse_bad_arguments(args, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text("made by `python -m reproduce demo`; it rewrites this folder\n")
    work = out / "work"
    voc, caffemodels = make_demo_inputs(work, args.images, args.seed, args.episodes)
    prototxt = work / "deploy_1shot_thin.prototxt"
    write_net(oslsm_deploy_net(1, OSLSMWidths.THIN), prototxt)
    converted = ensure_converted(caffemodels, work / "models", prototxt=prototxt)
    runs = evaluate_folds((1, 2), voc, converted, out, episodes=args.episodes, device=args.device,
                          protocol="original", workers=args.workers, progress=not args.no_progress)
    for table in (1, 2):
        paths = write_table_and_report(table, runs[table], out, voc, note=NOTE, device=args.device)
        print(paths["md"].read_text())
        print(f"report: {paths['report']}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; tables in {out}")
    return 0


def refuse_bad_arguments(args, out: Path) -> None:
    """Every problem with the arguments and the output folder, together, before anything is written."""
    from reproduce.eval_config import argument_problems

    problems = argument_problems(n_episodes=args.episodes, workers=args.workers, device=args.device,
                                 folders={"--out": out})
    if args.images < MIN_IMAGES:
        problems.append(f"--images must be >= {MIN_IMAGES} (a query and 5 supports for each of the "
                        f"{N_CLASSES} classes), got {args.images}")
    if out.is_dir() and not _made_by_demo(out) and any(out.iterdir()):
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        problems.append(f"--out {out} holds files the demo did not make ({found}); the demo deletes and "
                        "rewrites what is in its folder, so it only writes into a new or empty folder or an "
                        "earlier demo's")
    raise_problems(problems)


def _made_by_demo(out: Path) -> bool:
    """The demo's stamp, or the recipe file that demos before the stamp left in work/."""
    return (out / STAMP).is_file() or (out / "work" / "recipe.json").is_file()
