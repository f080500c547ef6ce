"""The evaluation runner on the golden synthetic VOC set with a small random OSLSM:
agreement with the original's exact net inputs, cache on/off bit-identity, resume after an
interruption (byte-identical outputs), run/model checks, the modern protocol, and a data set
folder that is never written."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import reproduce.evaluation.evaluate as ev
from reproduce.data.dataset_inputs import query_label_grid
from reproduce.data.episodes import Episode, episodes_to_json
from reproduce.errors import ReproduceError
from reproduce.evaluation.evaluate import evaluate
from reproduce.data.preprocess import binary_mask, prep_query
from reproduce.evaluation.scoring import episode_counts
from reproduce.data.voc import VOCDataset
from weights_convert.errors import Interrupted
from helpers import GOLDEN, copy_golden_voc, mixed_thin_params, tree_digest, write_mixed_thin_caffemodel
from weights_convert.convert import convert
from weights_convert.netspec import write_net
from weights_convert.oslsm import OSLSMWidths, load_oslsm
from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel
from weights_convert.oslsm.spec import oslsm_deploy_net

EPISODES = GOLDEN / "episodes"
RESULT_FILES = ("manifest.json", "episodes.json", "all_results.csv", "summary.json", "iou_results.txt")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A read-only copy of the golden VOC set, fold-0 and fold-1 thin random models converted by
    our converter, and episode files taken from the original data layer's lists."""
    tmp = tmp_path_factory.mktemp("evaluate")
    voc = copy_golden_voc(tmp)
    widths = OSLSMWidths.THIN
    net = oslsm_deploy_net(1, widths)
    prototxt = tmp / "deploy_1shot.prototxt"
    write_net(net, prototxt)
    write_net(oslsm_deploy_net(5, widths), tmp / "deploy_5shot.prototxt")
    weights = {}
    for fold in (0, 1):
        caffemodel = tmp / f"thin_fold{fold}.caffemodel"
        write_mixed_thin_caffemodel(caffemodel, seed=13)
        weights[fold] = tmp / f"fold{fold}.safetensors"
        convert(prototxt, caffemodel, weights[fold], model="oslsm", labels={"fold": fold})
    golden = json.loads((EPISODES / "episodes.json").read_text())["episodes"]
    # Fold 0, 1-shot: the original's episodes 0..5, then 6 later ones whose queries repeat, so
    # that the cache has something to reuse.
    g0 = golden["fold0_1shot"]
    first = [Episode(e["query"], e["cls"], e["supports"]) for e in g0["list"][:6]]
    seen = {e.query for e in first}
    repeats = [Episode(e["query"], e["cls"], e["supports"]) for e in g0["list"][6:] if e["query"] in seen][:6]
    eps0 = first + repeats
    episodes_to_json(tmp / "ep_f0_k1.json", eps0, 0, 1, g0["n_items"])
    g1 = golden["fold1_5shot"]
    eps1 = [Episode(e["query"], e["cls"], e["supports"]) for e in g1["list"][:3]]
    episodes_to_json(tmp / "ep_f1_k5.json", eps1, 1, 5, g1["n_items"])
    return {"tmp": tmp, "voc": voc, "digest": tree_digest(voc), "weights": weights, "prototxt": prototxt,
            "prototxt5": tmp / "deploy_5shot.prototxt", "eps0": eps0, "eps1": eps1,
            "ep0": tmp / "ep_f0_k1.json", "ep1": tmp / "ep_f1_k5.json"}


def _run(env, name, **kw):
    args = dict(voc=env["voc"], weights=env["weights"][0], fold=0, shots=1, n_episodes=len(env["eps0"]),
                episodes_file=env["ep0"], progress=False)
    out = kw.pop("out_dir", env["tmp"] / name)
    args.update(kw)
    return evaluate(out_dir=out, **args), out


def _rows(out: Path) -> list[list[str]]:
    return [line.split(",") for line in (out / "all_results.csv").read_text().splitlines()]


def _timings(out: Path) -> dict:
    return json.loads((out / "timings.json").read_text())


@pytest.fixture(scope="module")
def reference_runs(env):
    """The same 12 episodes with the cache off, on (fresh disk cache) and on again (all disk hits)."""
    cache_dir = env["tmp"] / "cache"
    off = _run(env, "off", cache=False)[1]
    on = _run(env, "on", cache=True, cache_dir=cache_dir, save_masks=True)[1]
    again = _run(env, "again", cache=True, cache_dir=cache_dir)[1]
    return off, on, again


def test_rows_equal_scoring_of_the_originals_inputs(env, reference_runs):
    """Episodes 0 and 1 of fold 0: our pipeline (own pre-processing, cache) must give the counts
    that the golden net inputs built by the original data layer give through the same model."""
    _, on, _ = reference_runs
    model = load_oslsm(env["weights"][0])
    z = np.load(EPISODES / "inputs_fold0_1shot.npz")
    rows = _rows(on)
    for e in (0, 1):
        with torch.inference_mode():
            w, b = model.condition(torch.from_numpy(z[f"{e}/first_img"]), torch.from_numpy(z[f"{e}/first_label"]))
            logits = model.head(model.query_features(torch.from_numpy(z[f"{e}/second_img"])), w, b, (500, 500))
        c = episode_counts(torch.sigmoid(logits).numpy(), z[f"{e}/second_label"])
        assert [int(v) for v in rows[e][:7]] == [e, 0, env["eps0"][e].cls - 1, c.tp, c.tn, c.fp, c.fn]
        assert c.tp + c.fp > 0 and c.tn > 0  # a non-degenerate prediction, so the check has teeth
    # The label-only path equals prep_query's label, and the golden second_label.
    ds = VOCDataset(env["voc"])
    ep = env["eps0"][0]
    mask = binary_mask(ds.read_mask(ep.query), ep.cls)
    label = query_label_grid(mask)
    assert np.array_equal(label, prep_query(ds.read_image(ep.query), mask)[1][0, 0])
    assert np.array_equal(label, z["0/second_label"][0, 0])


def test_cache_on_off_bit_identical_and_forward_counts(env, reference_runs):
    off, on, again = reference_runs
    for name in RESULT_FILES:
        assert (off / name).read_bytes() == (on / name).read_bytes() == (again / name).read_bytes(), name
    eps = env["eps0"]
    n_queries = len({e.query for e in eps})
    n_supports = len({(s, e.cls) for e in eps for s in e.supports})
    assert n_queries < len(eps)
    assert _timings(off)["forwards"] == {"query": len(eps), "support": len(eps)}
    assert _timings(on)["forwards"] == {"query": n_queries, "support": n_supports}
    assert _timings(again)["forwards"] == {"query": 0, "support": 0}
    assert _timings(again)["cache_stats"]["query_disk_hits"] == n_queries
    # Cache files live under our cache dir; the data set folder is untouched.
    assert len(list((env["tmp"] / "cache" / "features" / "query").rglob("*.safetensors"))) == n_queries
    assert tree_digest(env["voc"]) == env["digest"]
    summary = json.loads((on / "summary.json").read_text())
    assert summary["fold"] == 0 and summary["shots"] == 1 and summary["protocol"] == "original"
    tp = sum(int(r[3]) for r in _rows(on))
    assert sum(v["tp"] for v in summary["per_class"].values()) == tp
    # Soft and hard masks, test.py's names; hard = score >= 0.5 (its quirk), scoring uses > 0.5.
    from PIL import Image
    hard = np.asarray(Image.open(on / "pred" / "hard" / "00000.png"))
    soft = np.asarray(Image.open(on / "pred" / "soft" / "00011.png"))
    assert hard.shape == soft.shape == (500, 500)
    row0 = _rows(on)[0]
    assert int((hard == 255).sum()) >= int(row0[3]) + int(row0[5])


def test_a_model_with_the_same_query_branch_reuses_its_cached_features(env, reference_runs, tmp_path):
    """Query features are keyed by the segmentation branch alone: a model that differs only in its
    conditioning branch (the demo's model before and after training fc8f) reads them from the
    cache the first model filled, and scores exactly as it does without any cache."""
    def variant(name, layer, factor):
        params = mixed_thin_params(seed=13)
        params[layer][0] = params[layer][0] * np.float32(factor)
        write_oslsm_caffemodel(tmp_path / f"{name}.caffemodel", params)
        convert(env["prototxt"], tmp_path / f"{name}.caffemodel", tmp_path / f"{name}.safetensors",
                model="oslsm", labels={"fold": 0})
        return tmp_path / f"{name}.safetensors"

    eps = env["eps0"]
    n_queries, n_supports = len({e.query for e in eps}), len({(s, e.cls) for e in eps for s in e.supports})
    weights = variant("other_fc8f", "fc8f", -1.5)
    shared = _run(env, "shared", weights=weights, cache=True, cache_dir=env["tmp"] / "cache",
                  out_dir=tmp_path / "shared")[1]
    alone = _run(env, "alone", weights=weights, cache=False, out_dir=tmp_path / "alone")[1]
    for name in RESULT_FILES:
        assert (shared / name).read_bytes() == (alone / name).read_bytes(), name
    assert _timings(shared)["forwards"] == {"query": 0, "support": n_supports}
    assert _timings(shared)["cache_stats"]["query_disk_hits"] == n_queries
    _, on, _ = reference_runs
    assert _rows(shared) != _rows(on)  # fc8f matters: the shared features were not the whole answer
    # Another query branch finds nothing to reuse.
    other = _run(env, "other_query", weights=variant("other_fc7s", "fc7s", 0.5), cache=True,
                 cache_dir=env["tmp"] / "cache", out_dir=tmp_path / "other_query")[1]
    assert _timings(other)["forwards"] == {"query": n_queries, "support": n_supports}


def test_resume_after_interruption_is_byte_identical(env, reference_runs, monkeypatch):
    off, _, _ = reference_runs
    real = ev.score_map
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(ev, "score_map", dying)
    with pytest.raises(Interrupted, match="interrupted after 5/12 episodes; run the same command again to resume"):
        _run(env, "resumed", cache=True)
    out = env["tmp"] / "resumed"
    assert len(_rows(out)) == 5 and not (out / "summary.json").exists()
    # A kill in the middle of a write leaves a partial line: it is cut off on restart.
    with open(out / "all_results.csv", "ab") as fh:
        fh.write(b"5,0,2,17")
    monkeypatch.setattr(ev, "score_map", real)
    _run(env, "resumed", cache=True)
    for name in RESULT_FILES:
        assert (out / name).read_bytes() == (off / name).read_bytes(), name
    assert _timings(out)["resumed_from"] == 5
    assert _timings(out)["episodes_this_session"] == len(env["eps0"]) - 5
    assert tree_digest(env["voc"]) == env["digest"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_stopped_cli_run_resumes_to_the_same_files(env, reference_runs, stop):
    """Killed, or stopped by SIGTERM (a scheduler's stop, handled as Ctrl-C: one line, exit 143),
    after some episodes: the same command finishes with the uninterrupted run's files."""
    off, _, _ = reference_runs
    out = env["tmp"] / f"stopped_{stop.name}"
    cmd = [sys.executable, "-m", "reproduce", "evaluate", "--voc", str(env["voc"]), "--weights",
           str(env["weights"][0]), "--fold", "0", "--shots", "1", "--episodes", str(len(env["eps0"])),
           "--episodes-file", str(env["ep0"]), "--out", str(out), "--no-cache", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    csv = out / "all_results.csv"
    deadline = time.time() + 40
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and csv.read_bytes().count(b"\n") >= 2:
            proc.send_signal(stop)
            break
        time.sleep(0.01)
    err = proc.communicate(timeout=60)[1].decode()
    if stop == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, err
    else:
        assert proc.returncode == 143 and len(err.strip().splitlines()) == 1, err
        assert "run the same command again to resume" in err and "Traceback" not in err
    done = csv.read_bytes().count(b"\n")
    assert 2 <= done < len(env["eps0"])
    rc = subprocess.run(cmd, capture_output=True)
    assert rc.returncode == 0, rc.stderr.decode()
    for name in RESULT_FILES:
        assert (out / name).read_bytes() == (off / name).read_bytes(), name
    assert _timings(out)["resumed_from"] == done


def test_a_different_run_in_the_same_folder_is_refused(env, reference_runs):
    with pytest.raises(ReproduceError, match=r"holds a different run: protocol was 'original', now 'modern'. Resume with"):
        _run(env, "off", cache=False, protocol="modern")
    other = env["tmp"] / "foreign"
    other.mkdir()
    (other / "all_results.csv").write_text("0,0,0,1,1,1,1,0.3\n")
    with pytest.raises(ReproduceError, match=r"holds files this tool did not write \(all_results.csv\)"):
        _run(env, "foreign")
    assert [p.name for p in other.iterdir()] == ["all_results.csv"]  # no lock left in it either


def test_fold_and_shots_mismatch_errors(env):
    with pytest.raises(ReproduceError, match=r"fold 0's model, but --fold is 1"):
        evaluate(env["voc"], env["weights"][0], 1, 5, n_episodes=3, episodes_file=env["ep1"],
                 out_dir=env["tmp"] / "mismatch", progress=False)
    with pytest.raises(ReproduceError, match=r"is a 1-shot deploy net .* but --shots is 5"):
        evaluate(env["voc"], env["weights"][1], 1, 5, n_episodes=3, episodes_file=env["ep1"],
                 prototxt=env["prototxt"], out_dir=env["tmp"] / "mismatch", progress=False)
    with pytest.raises(ReproduceError, match=r"holds fold 1 5-shot episodes; this run is fold 1 1-shot"):
        evaluate(env["voc"], env["weights"][1], 1, 1, n_episodes=3, episodes_file=env["ep1"],
                 out_dir=env["tmp"] / "mismatch", progress=False)
    with pytest.raises(ReproduceError, match="run folder .* lies inside the data set folder"):
        evaluate(env["voc"], env["weights"][0], 0, 1, n_episodes=3, episodes_file=env["ep0"],
                 out_dir=env["voc"] / "run", progress=False)
    assert not (env["tmp"] / "mismatch").exists()
    assert tree_digest(env["voc"]) == env["digest"]


def test_five_shot_and_modern_protocol(env):
    s_orig, out_o = _run(env, "k5_original", weights=env["weights"][1], fold=1, shots=5, n_episodes=3,
                         episodes_file=env["ep1"], prototxt=env["prototxt5"])
    s_mod, out_m = _run(env, "k5_modern", weights=env["weights"][1], fold=1, shots=5, n_episodes=3,
                        episodes_file=env["ep1"], protocol="modern")
    assert _timings(out_o)["forwards"]["support"] == len({(s, e.cls) for e in env["eps1"] for s in e.supports})
    ds = VOCDataset(env["voc"])
    for ro, rm, ep in zip(_rows(out_o), _rows(out_m), env["eps1"]):
        void = query_label_grid((ds.read_mask(ep.query) == 255).astype(np.float32)) > 0.5
        assert sum(int(v) for v in ro[3:7]) == 500 * 500
        assert sum(int(v) for v in rm[3:7]) == 500 * 500 - int(void.sum())
        assert int(rm[3]) <= int(ro[3]) and int(rm[5]) <= int(ro[5])
    assert any(int(rm[5]) < int(ro[5]) or int(rm[4]) < int(ro[4]) for ro, rm in zip(_rows(out_o), _rows(out_m)))
    assert s_mod["protocol"] == "modern" and s_orig["protocol"] == "original"


def test_generated_episodes_are_the_originals(env, monkeypatch):
    """Without an episode file the run generates the original data layer's list (seed 1385)."""
    import reproduce.data.items

    monkeypatch.setattr(reproduce.data.items, "_MEMO", {})  # another test may have scanned this data set
    _, out = _run(env, "generated", n_episodes=3, episodes_file=None, cache_dir=env["tmp"] / "gen_cache")
    golden = json.loads((EPISODES / "episodes.json").read_text())["episodes"]["fold0_1shot"]["list"][:3]
    ours = json.loads((out / "episodes.json").read_text())["episodes"]
    assert ours == golden
    assert (env["tmp"] / "gen_cache" / "items").is_dir()
    assert tree_digest(env["voc"]) == env["digest"]


def test_evaluation_runs_in_faithful_mode(env):
    seen = []

    def spy(*args, **kwargs):
        seen.append((torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
                     torch.are_deterministic_algorithms_enabled()))
        return load_oslsm(*args, **kwargs)

    _run(env, "faithful", n_episodes=1, cache=False, load_model=spy)
    assert seen == [("ieee", "ieee", True)]
    assert not torch.are_deterministic_algorithms_enabled()


def test_cache_keys_follow_code_and_hardware(monkeypatch):
    """Cached tensors are only reused where the same kernels would recompute them bit for bit."""
    from reproduce.evaluation.provenance import code_version

    base = code_version("cpu")
    assert code_version("cpu") == base
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    assert code_version("cpu") != base
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0-other")
    assert code_version("cpu") != base


def test_zero_episodes_and_a_mask_of_the_wrong_size_are_refused(env, tmp_path):
    from PIL import Image

    with pytest.raises(ReproduceError, match="--episodes must be >= 1, got 0"):
        evaluate(env["voc"], env["weights"][0], 0, 1, n_episodes=0, out_dir=tmp_path / "zero", progress=False)
    assert not (tmp_path / "zero").exists()
    voc = tmp_path / "VOC2012"
    shutil.copytree(env["voc"], voc)
    query = env["eps0"][0].query
    mask_path = voc / "SegmentationClass" / f"{query}.png"
    mask = Image.open(mask_path)
    mask.crop((0, 0, mask.width - 1, mask.height)).save(mask_path)  # palette kept, one column short
    with pytest.raises(ReproduceError, match=rf"{query}.png is \d+x\d+ but .*{query}.jpg is \d+x\d+"):
        evaluate(voc, env["weights"][0], 0, 1, n_episodes=1, episodes_file=env["ep0"], cache=False,
                 out_dir=tmp_path / "bad", progress=False)


def test_a_finished_run_extends_to_more_episodes(env, reference_runs):
    """A run of the first 6 episodes, asked again for all 12, scores only the 6 new ones and ends
    byte-identical to the run that did all 12 at once."""
    off, _, _ = reference_runs
    _, out = _run(env, "extended", n_episodes=6, cache=False)
    assert len(_rows(out)) == 6
    _run(env, "extended", cache=False)
    assert _timings(out)["resumed_from"] == 6 and _timings(out)["episodes_this_session"] == 6
    for name in RESULT_FILES:
        assert (out / name).read_bytes() == (off / name).read_bytes(), name
    with pytest.raises(ReproduceError, match=r"the episodes differ \(not the first 12 of this run's 3\)"):
        _run(env, "extended", n_episodes=3, cache=False)


def test_resume_refusal_says_what_changed_in_words(env, reference_runs, tmp_path):
    off, _, _ = reference_runs
    out = tmp_path / "changed"
    shutil.copytree(off, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["code"]["torch"] = "1.0.0"
    manifest["code"]["hardware"] = manifest["code"]["hardware"].replace("threads=", "threads=9")
    manifest["code"]["sources"]["reproduce/evaluation/scoring.py"] = "0" * 16
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReproduceError) as err:
        evaluate(env["voc"], env["weights"][0], 0, 1, n_episodes=len(env["eps0"]), episodes_file=env["ep0"],
                 progress=False, cache=False, out_dir=out)
    message = str(err.value)
    assert "torch was '1.0.0', now" in message
    assert "hardware was " in message and "threads=9" in message
    assert "source files changed: reproduce/evaluation/scoring.py" in message
    assert "code_version" not in message


def test_every_problem_is_reported_before_anything_is_written(env, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ReproduceError) as err:
        evaluate(env["voc"], tmp_path / "missing.safetensors", 0, 0, n_episodes=-5, device="tpu",
                 out_dir=out, progress=False, cache_dir=env["voc"] / "cache")
    message = str(err.value)
    assert message.startswith("5 problems:")
    for expected in ("--episodes must be >= 1, got -5", "shots must be >= 1, got 0",
                     "--device 'tpu'", "missing.safetensors: no such file", "cache folder"):
        assert expected in message
    assert not out.exists()
    assert tree_digest(env["voc"]) == env["digest"]


def test_a_bad_model_leaves_nothing_that_blocks_the_retry(env, tmp_path):
    bad = tmp_path / "fold0.safetensors"
    bad.write_bytes(b"\x0a\x03abc" * 10)
    out = tmp_path / "run"
    with pytest.raises(Exception):
        _run(env, "unused", weights=bad, out_dir=out, n_episodes=1)
    assert not out.exists()
    _run(env, "unused", out_dir=out, n_episodes=1, cache=False)
    assert len(_rows(out)) == 1


def test_a_second_process_is_refused_by_the_lock(env, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from weights_convert.files.folder_lock import folder_lock\n"
        f"with folder_lock({str(out)!r}, '.run.lock', 'evaluation', RuntimeError, owns=lambda _: True):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(ReproduceError, match=rf"another evaluation process \(pid {holder.pid}\) is writing"):
            _run(env, "unused", out_dir=out, n_episodes=1, cache=False)
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    _run(env, "unused", out_dir=out, n_episodes=1, cache=False)  # the lock died with its process
    assert len(_rows(out)) == 1


def test_concurrent_runs_into_one_folder_never_interleave(env, tmp_path):
    """Two real processes started together: one runs, the other is refused; the journal stays whole."""
    out = tmp_path / "race"
    cmd = [sys.executable, "-m", "reproduce", "evaluate", "--voc", str(env["voc"]), "--weights",
           str(env["weights"][0]), "--fold", "0", "--shots", "1", "--episodes", str(len(env["eps0"])),
           "--episodes-file", str(env["ep0"]), "--out", str(out), "--no-cache", "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert "another evaluation process" in next(err for rc, err in results if rc == 2)
    assert [int(r[0]) for r in _rows(out)] == list(range(len(env["eps0"])))


def test_resuming_with_save_masks_writes_the_missing_masks(env, reference_runs, tmp_path):
    off, on, _ = reference_runs
    out = tmp_path / "masks_later"
    shutil.copytree(off, out)
    assert not (out / "pred").exists()
    evaluate(env["voc"], env["weights"][0], 0, 1, n_episodes=len(env["eps0"]), episodes_file=env["ep0"],
             progress=False, cache=False, out_dir=out, save_masks=True)
    for kind in ("soft", "hard"):
        names = sorted(p.name for p in (on / "pred" / kind).iterdir())
        assert names == sorted(p.name for p in (out / "pred" / kind).iterdir()) and len(names) == len(env["eps0"])
        for name in names:
            assert (out / "pred" / kind / name).read_bytes() == (on / "pred" / kind / name).read_bytes()


def test_nonfinite_weights_are_reported_at_conversion_and_refused(env, tmp_path, capsys):
    params = random_oslsm_params(OSLSMWidths.THIN, seed=13, hashing=True)
    params["fc7s"][0][0, 0, 0, 0] = np.nan
    params["fc7s"][1][2] = np.inf
    caffemodel = tmp_path / "nan.caffemodel"
    write_oslsm_caffemodel(caffemodel, params)
    for form in ("oslsm", "graph"):
        report = convert(env["prototxt"], caffemodel, tmp_path / f"nan_{form}.safetensors", model=form)
        expected = ({"segmentation.fc7.weight": 1, "segmentation.fc7.bias": 1} if form == "oslsm"
                    else {"fc7s/0": 1, "fc7s/1": 1})
        assert report["nonfinite"] == expected
    from weights_convert.cli import main as convert_main

    assert convert_main(["convert", "--prototxt", str(env["prototxt"]), "--caffemodel", str(caffemodel), "--out",
                         str(tmp_path / "cli.safetensors"), "--model", "oslsm"]) == 0
    assert "NaN or infinite values in segmentation.fc7.weight (1), segmentation.fc7.bias (1)" in capsys.readouterr().err
    weights = tmp_path / "nan_oslsm.safetensors"
    with pytest.raises(ReproduceError, match=r"NaN or infinite values in segmentation.fc7.weight \(1\), "
                                             r"segmentation.fc7.bias \(1\).*--allow-nonfinite"):
        _run(env, "unused", weights=weights, out_dir=tmp_path / "nan_run", n_episodes=1)
    assert not (tmp_path / "nan_run").exists()
    _run(env, "unused", weights=weights, out_dir=tmp_path / "nan_run", n_episodes=1, cache=False,
         allow_nonfinite=True)
    assert len(_rows(tmp_path / "nan_run")) == 1


def _writable_copy(voc: Path, dest: Path) -> Path:
    shutil.copytree(voc, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def test_files_the_episodes_read_are_checked_before_the_folder_is_made(env, tmp_path):
    voc = _writable_copy(env["voc"], tmp_path / "VOC2012")
    gone = env["eps0"][3].supports[0]
    (voc / "JPEGImages" / f"{gone}.jpg").unlink()
    out = tmp_path / "run"
    with pytest.raises(ReproduceError, match=rf"do not exist: .*JPEGImages/{gone}\.jpg"):
        _run(env, "unused", voc=voc, out_dir=out, cache=False)
    assert not out.exists()


def test_a_folder_with_nothing_scored_never_blocks_a_changed_request(env, tmp_path):
    out = tmp_path / "run"
    _run(env, "unused", out_dir=out, n_episodes=2, cache=False)
    (out / "all_results.csv").write_bytes(b"")  # as a run stopped before its first episode leaves it
    _run(env, "unused", out_dir=out, cache=False, protocol="modern")
    assert len(_rows(out)) == len(env["eps0"])
    assert json.loads((out / "manifest.json").read_text())["protocol"] == "modern"


def test_a_resume_on_changed_data_is_refused_naming_the_file(env, reference_runs, tmp_path):
    """Stop after 5 episodes, change an image those episodes read, resume: refused in words."""
    voc = _writable_copy(env["voc"], tmp_path / "VOC2012")
    out = tmp_path / "run"
    _run(env, "unused", voc=voc, out_dir=out, n_episodes=5, cache=False)
    changed = env["eps0"][1].query
    image = voc / "JPEGImages" / f"{changed}.jpg"
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(ReproduceError, match=rf"scored on other data: the image or mask of {changed} changed"):
        _run(env, "unused", voc=voc, out_dir=out, cache=False)
    assert len(_rows(out)) == 5
    digests = json.loads((out / "data.json").read_text())
    assert set(digests) == {n for ep in env["eps0"][:5] for n in (ep.query, *ep.supports)}


def test_damaged_feature_cache_entries_are_recomputed_never_used(env, reference_runs, tmp_path, capsys):
    """A cache entry whose bytes changed (one flipped byte) or that was cut short is recomputed,
    with a warning naming it; the run's files stay those of the uncached run."""
    off, _, _ = reference_runs
    cache = tmp_path / "cache"
    _run(env, "unused", out_dir=tmp_path / "fill", cache=True, cache_dir=cache)
    entries = sorted((cache / "features" / "query").rglob("*.safetensors"))
    flipped, cut = entries[0], entries[1]
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # the last tensor byte
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[:100])
    capsys.readouterr()
    out = tmp_path / "reused"
    _run(env, "unused", out_dir=out, cache=True, cache_dir=cache)
    err = capsys.readouterr().err
    assert f"{flipped} is damaged (its tensors do not match" in err and f"{cut} is damaged (unreadable" in err
    assert _timings(out)["forwards"]["query"] == 2
    for name in ("all_results.csv", "summary.json"):
        assert (out / name).read_bytes() == (off / name).read_bytes(), name


def test_saved_masks_carry_their_digest_and_a_damaged_one_is_not_used(env, reference_runs, tmp_path, capsys):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from reproduce.evaluation.run_folder import MASK_DIGEST_KEY, RunFolder, read_saved_mask

    _, on, _ = reference_runs
    soft = RunFolder(on).mask_paths(3)["soft"]
    intact = read_saved_mask(soft)
    assert intact is not None and intact.shape == (500, 500)
    with Image.open(soft) as im:
        written = im.info[MASK_DIGEST_KEY]
    altered = tmp_path / "altered.png"  # other pixels under the old digest
    text = PngInfo()
    text.add_text(MASK_DIGEST_KEY, written)
    Image.fromarray(255 - intact).save(altered, format="PNG", pnginfo=text)
    cut = tmp_path / "cut.png"
    cut.write_bytes(soft.read_bytes()[:200])
    capsys.readouterr()
    assert read_saved_mask(altered) is None and read_saved_mask(cut) is None
    err = capsys.readouterr().err
    assert f"{altered} is damaged (its pixels do not match" in err and f"{cut} is damaged (unreadable" in err


# ---------------------------------------------------------------------------- folders that are not ours
def _evaluate_cli(env, out, *extra):
    from reproduce.cli import main

    return main(["evaluate", "--voc", str(env["voc"]), "--weights", str(env["weights"][0]), "--fold", "0",
                 "--shots", "1", "--episodes-file", str(env["ep0"]), "--episodes", "1", "--no-progress",
                 "--out", str(out), *extra])


@pytest.mark.parametrize("files", [("summary.json", "iou_results.txt", "timings.json"), ("all_results.csv",)])
def test_a_folder_of_someone_elses_results_is_left_alone(env, tmp_path, capsys, files):
    """No manifest of ours: refused before anything (a lock included) is put in it."""
    out = tmp_path / "mine"
    out.mkdir()
    for name in files:
        (out / name).write_text("the user's own\n")
    before = tree_digest(out)
    assert _evaluate_cli(env, out) == 2
    assert "holds files this tool did not write" in capsys.readouterr().err
    assert tree_digest(out) == before and sorted(p.name for p in out.iterdir()) == sorted(files)


def test_a_cache_dir_that_is_a_run_folder_is_refused(env, tmp_path, capsys):
    run = tmp_path / "run"
    assert _evaluate_cli(env, run) == 0
    before = tree_digest(run)
    assert _evaluate_cli(env, tmp_path / "other", "--cache-dir", str(run)) == 2
    err = capsys.readouterr().err
    assert "--cache-dir" in err and "holds files the cache did not write" in err
    assert tree_digest(run) == before and not (tmp_path / "other").exists()
