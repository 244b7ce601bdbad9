"""Multi-process search with torchrun: 2 CPU processes on the gloo backend.

The acceptance test: a 2-process search gives the genotype of the 1-process search with the same
global batch, and metrics equal within floating-point tolerance. The pieces it rests on
(synchronized BatchNorm, rank-sliced batches) are tested on their own too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from nasreg._core import distributed as ddp

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(args: list[str], tmp_path: Path, nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "scratch"),
           "NASREG_DIST_TIMEOUT": "300", "PYTHONUNBUFFERED": "1"}
    (tmp_path / "scratch").mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--max_restarts=0", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


# ------------------------------------------------------------------ pieces, one process


def test_one_process_context_is_rank_0_of_1_and_collectives_are_identities():
    ctx = ddp.current()
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    g = [torch.ones(3), None]
    ddp.average_(g)
    assert torch.equal(g[0], torch.ones(3))
    assert ddp.all_sum([1.5, 2]) == [1.5, 2.0]
    assert ddp.agree(True) is True and ddp.agree(False) is False
    assert ddp.broadcast_object({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("n,batch,world", [(32, 16, 2), (37, 16, 2), (37, 10, 3), (5, 4, 2), (3, 4, 4)])
def test_rank_batches_are_equal_slices_of_the_global_batches(n, batch, world):
    data = list(range(n))
    per_rank = []
    for rank in range(world):
        g = torch.Generator().manual_seed(7)
        sampler = ddp.RankBatchSampler(RandomSampler(data, generator=g), batch, rank, world)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
    g = torch.Generator().manual_seed(7)
    order = list(RandomSampler(data, generator=g))
    expected = [order[i:i + batch] for i in range(0, n, batch)]
    expected = [b[:len(b) // world * world] for b in expected if len(b) >= world]
    assert len({len(b) for b in per_rank}) == 1  # every rank takes as many steps
    for step, global_batch in enumerate(expected):
        sizes = {len(per_rank[r][step]) for r in range(world)}
        assert sizes == {len(global_batch) // world}  # equal shares
        assert sum((per_rank[r][step] for r in range(world)), []) == global_batch


def test_sync_batch_norm_conversion_keeps_parameters_and_state_dict_keys():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.BatchNorm2d(4, affine=False), torch.nn.GroupNorm(2, 4))
    keys, weight = list(net.state_dict()), net[1].weight
    assert ddp.sync_batch_norm_(net) == 2
    assert list(net.state_dict()) == keys and net[1].weight is weight
    assert isinstance(net[1], ddp.SyncBatchNorm2d) and type(net[3]) is torch.nn.GroupNorm
    # In one process it is plain BatchNorm.
    x = torch.randn(4, 3, 6, 6)
    ref = torch.nn.BatchNorm2d(4)
    ref.load_state_dict(net[1].state_dict())
    h = net[0](x)
    torch.testing.assert_close(net[1](h), ref(h), rtol=0, atol=0)


# ------------------------------------------------------------------ two processes (gloo)

SYNC_BN_CHECK = textwrap.dedent("""
    import torch, torch.distributed as dist
    from torch import nn
    from nasreg._core import distributed as ddp
    torch.set_num_threads(1)
    ctx, _ = ddp.init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    N, C = 8, 3
    x = torch.randn(N, C, 5, 5, dtype=torch.float64) * 3 + 1
    gy = torch.randn(N, C, 5, 5, dtype=torch.float64)
    for affine in (True, False):
        for momentum in (0.1, None, 0.0):
            ref = nn.BatchNorm2d(C, affine=affine, momentum=momentum).double()
            if affine:
                with torch.no_grad():
                    ref.weight.uniform_(0.5, 2); ref.bias.uniform_(-1, 1)
            bn = nn.BatchNorm2d(C, affine=affine, momentum=momentum).double()
            bn.load_state_dict(ref.state_dict())
            ddp.sync_batch_norm_(bn)
            for _ in range(2):  # running statistics over two steps
                for p in (*ref.parameters(), *bn.parameters()):
                    p.grad = None
                xr = x.clone().requires_grad_()
                yr = ref(xr); (yr * gy).sum().backward()
                lo, hi = ddp.rank_slice(N, ctx.rank, ctx.world_size)
                xl = x[lo:hi].clone().requires_grad_()
                yl = bn(xl); (yl * gy[lo:hi]).sum().backward()
                torch.testing.assert_close(yl, yr[lo:hi])
                torch.testing.assert_close(xl.grad, xr.grad[lo:hi])
                torch.testing.assert_close(bn.running_mean, ref.running_mean)
                torch.testing.assert_close(bn.running_var, ref.running_var)
                assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked)
                if affine:  # this rank's share; their sum is the global gradient
                    gw, gb = bn.weight.grad.clone(), bn.bias.grad.clone()
                    dist.all_reduce(gw); dist.all_reduce(gb)
                    torch.testing.assert_close(gw, ref.weight.grad)
                    torch.testing.assert_close(gb, ref.bias.grad)
            bn.eval(); ref.eval()  # eval mode: running statistics, no communication
            torch.testing.assert_close(bn(x), ref(x))
    # float32 and a bfloat16 input: statistics in float32
    bn = ddp.SyncBatchNorm2d(C)
    y = bn(x[lo:hi].float().bfloat16())
    assert y.dtype == torch.bfloat16
    open(f"ok{ctx.rank}", "w").close()
    ddp.shutdown()
""")


def test_sync_batch_norm_over_two_processes_equals_batch_norm_over_the_global_batch(tmp_path):
    script = tmp_path / "sync_bn.py"
    script.write_text(SYNC_BN_CHECK)
    out = _torchrun([str(script)], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()  # both ranks checked


TINY = ["data.dataset=digits", "data.limit=128", "data.batch_size=32", "data.num_workers=0",
        "search_space.cells=3", "search_space.channels=4", "run.threads=1", "run.device=cpu",
        "run.seed=3"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# How close a 2-process run can be to the 1-process run, in float32 (the derivation).
#
# 1. One step. Both runs add the same terms in another order: a weight gradient sums the B = 32
#    images of the global batch over their H x W positions in one kernel in one process, as two
#    halves plus the gradient all-reduce in two; BatchNorm statistics are the native kernel's in
#    one process, SyncBatchNorm's two-pass sums plus an all-reduce in two. Reordering a float32
#    sum moves it by a few units of u = 2**-24 = 6e-8 times the number of rounding steps: a few
#    1e-6 relative per gradient tensor (measured between two kernel orders: <= 3.5e-6, six steps). Both
#    runs use one thread ([run] threads = 1, OMP_NUM_THREADS=1) and are deterministic: rerun, under
#    load or not, each gives the same bits, so nothing else differs.
# 2. Smooth steps keep it there: SGD moves the weights by lr * g, so the metrics of both runs stay
#    within ~1e-7 (measured, 1 against 2 processes, every parametrization below, AVX-512 CPU).
# 3. ReLU and max-pool are not smooth. A pre-activation within rounding distance of zero (or two
#    max-pool inputs within rounding distance of each other) goes one way in one run and the other
#    way in the other, and that element's contribution to its weights' gradient is on in one run,
#    off in the other: a jump of up to ~1/M of the gradient, M = the summed elements (B*H*W =
#    32*4*4 = 512 on the 4x4 maps of the reduction cell), ~1e-2 instead of 1e-6 (measured: 1.6e-2
#    in one step). With ~1e6 pre-activations a step this is a matter of chance, at any step, and
#    which way it goes depends on the CPU's kernels (vector width, blocking). After one such
#    crossing the losses differ by ~1.7e-5 one step later and grow about 2.5x a step, as the
#    diverged activations cross more kinks (measured: 1.1e-4 four steps later, as the CI failure
#    that prompted this, 1.2e-4 at stage 1, epoch 1; alpha softmax 4.7e-5; seed 4: 1.5e-5).
#
# So float32 promises nothing tighter than ~1e-4 after a few steps. The tolerances allow ~17x that
# (these runs take at most 12 steps). They still catch what they are for: a missing gradient
# average is a factor 2; per-rank instead of global-batch BatchNorm statistics move the losses by
# 2e-3 to 7e-2 from the first epoch on and the accuracies by several images (measured). An
# accuracy counts images: a prediction whose two best logits are closer than the loss difference
# may flip, so accuracies may differ by one image of the 64 a split holds.
LOSS_RTOL, ALPHA_RTOL = 2e-3, 1e-3
ACC_ATOL = 1 / 64 + 1e-9  # one image (data.limit=128, train_portion 0.5: 64 train, 64 validation)


def _assert_metrics_match(m1: list[dict], m2: list[dict], keys: tuple[str, ...], alphas: bool = True) -> None:
    """The 2-process metrics ``m2`` equal the 1-process ``m1`` within float32's promise (above)."""
    assert [(m["stage"], m["epoch"]) for m in m2] == [(m["stage"], m["epoch"]) for m in m1]
    for a, b in zip(m1, m2):
        where = (a["stage"], a["epoch"])
        for key in keys:
            if key.endswith("_acc"):
                assert abs(b[key] - a[key]) <= ACC_ATOL, (key, where, a[key], b[key])
            else:
                assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (key, where, a[key], b[key])
        for ct in a["alphas"] if alphas else ():  # per edge (stage 1's candidate sets differ in size)
            assert len(b["alphas"][ct]) == len(a["alphas"][ct])
            for ea, eb in zip(a["alphas"][ct], b["alphas"][ct]):
                assert eb == pytest.approx(ea, rel=ALPHA_RTOL), (ct, where)


def _rows(*figures: tuple) -> list[dict]:
    keys = ("stage", "epoch", "train_loss", "val_loss", "train_acc", "val_acc")
    return [dict(zip(keys, f), alphas={}) for f in figures]


#: A 1-process search (tests' TINY spec, dgdarts.toml, 2 epochs, warm-up 1) and the same search
#: with other float32 kernels (ATEN_CPU_CAPABILITY=default): a kink crossing at stage 1 (above).
ONE_PROCESS = _rows((0, 0, 2.3557329177856445, 2.3054877519607544, 0.1875, 0.078125),
                    (0, 1, 2.2172857522964478, 2.1526215076446533, 0.21875, 0.171875),
                    (1, 0, 2.3634488582611084, 2.373117446899414, 0.0625, 0.109375),
                    (1, 1, 2.2377049922943115, 2.252908229827881, 0.1875, 0.140625))
OTHER_KERNELS = _rows((0, 0, 2.3557329177856445, 2.3054877519607544, 0.1875, 0.078125),
                      (0, 1, 2.2172857522964478, 2.152621269226074, 0.21875, 0.171875),
                      (1, 0, 2.3634488582611084, 2.373156785964966, 0.0625, 0.109375),
                      (1, 1, 2.2378740310668945, 2.2531529664993286, 0.1875, 0.140625))
KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


def _changed(rows: list[dict], row: int, **figures: float) -> list[dict]:
    return [{**r, **figures} if i == row else r for i, r in enumerate(rows)]


@pytest.mark.parametrize("other", [
    OTHER_KERNELS,
    _changed(ONE_PROCESS, 3, val_loss=2.253168),  # the CI failure: rel 1.2e-4 at stage 1, epoch 1
    _changed(ONE_PROCESS, 1, val_acc=0.171875 + 1 / 64),  # one validation image the other way
    _changed(ONE_PROCESS, 2, train_acc=0.0625 - 1 / 64, train_loss=2.3634488582611084 * (1 + 1e-3)),
], ids=["other-kernels", "ci-failure", "one-image", "ten-times-the-ci-failure"])
def test_metrics_within_what_float32_promises_pass(other):
    _assert_metrics_match(ONE_PROCESS, other, KEYS)


@pytest.mark.parametrize("other", [
    _changed(ONE_PROCESS, 0, val_loss=2.3054877519607544 * (1 + 4.9e-3)),  # per-rank BatchNorm (measured)
    _changed(ONE_PROCESS, 3, val_loss=2.252908229827881 * (1 + 3e-3)),
    _changed(ONE_PROCESS, 1, val_acc=0.171875 + 2 / 64),  # two images
    ONE_PROCESS[:3],  # an epoch missing
    [*ONE_PROCESS[:2], ONE_PROCESS[3], ONE_PROCESS[2]],  # out of order
], ids=["batch-norm-per-rank", "loss-off-3e-3", "two-images", "epoch-missing", "epochs-swapped"])
def test_metrics_beyond_what_float32_promises_fail(other):
    with pytest.raises(AssertionError):
        _assert_metrics_match(ONE_PROCESS, other, KEYS)


@pytest.mark.parametrize("spec,extra", [
    ("dgdarts.toml", ["search.epochs=2", "search.warmup_epochs=1"]),
    ("darts.toml", ["search.epochs=2", "strategy.order=2"]),
    ("dgdarts.toml", ["search.epochs=[1, 2]", "search.warmup_epochs=0", "data.loader=device"]),
], ids=["dgdarts-first-order-2-stages", "darts-second-order", "device-loader"])
def test_two_process_search_matches_one_process_search_with_the_same_global_batch(tmp_path, spec, extra):
    sets = [a for o in [*TINY, *extra] for a in ("--set", o)]
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "nasreg", "run", str(ROOT / "specs" / spec), "--out", str(one),
                             "-q", "--no-preflight", *sets], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-3000:]
    multi = _torchrun(["-m", "nasreg", "run", str(ROOT / "specs" / spec), "--out", str(two), "-q",
                       "--no-preflight", *sets], tmp_path)
    assert multi.returncode == 0, multi.stdout[-3000:] + multi.stderr[-3000:]

    assert json.loads((two / "genotype.json").read_text())["cells"] == \
        json.loads((one / "genotype.json").read_text())["cells"]
    _assert_metrics_match(_metrics(one), _metrics(two), ("train_loss", "train_acc", "val_loss", "val_acc"))
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2
    # Only rank 0 wrote: one run directory, and rank 1's scratch directory is gone.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "scratch", "two"]
    assert not list((tmp_path / "scratch").glob("nasreg-rank*"))


def test_sampling_strategies_refuse_torchrun_with_one_line(tmp_path):
    out = _torchrun(["-m", "nasreg", "run", str(ROOT / "specs" / "random.toml"), "--out", str(tmp_path / "r"),
                     "-q", "--set", "run.device=cpu"], tmp_path)
    assert out.returncode != 0
    assert "cannot run under torchrun" in out.stderr
    worker_lines = [line for line in out.stderr.splitlines() if line.startswith("[rank")]
    assert not any("Traceback" in line for line in worker_lines), out.stderr[-3000:]
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers to kill through /proc")
def test_two_process_search_killed_and_resumed_under_torchrun_matches_one_process(tmp_path):
    """SIGKILL to the whole torchrun job after its first checkpoint; `torchrun -m nasreg resume`
    then ends with the one-process run's genotype and metrics."""
    import signal
    import time

    sets = [a for o in [*TINY, "search.epochs=3", "search.warmup_epochs=1", "selector.stages=2"]
            for a in ("--set", o)]
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "nasreg", "run", str(ROOT / "specs" / "dgdarts.toml"),
                             "--out", str(one), "-q", "--no-preflight", *sets], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-3000:]

    (tmp_path / "scratch").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "scratch"), "NASREG_DIST_TIMEOUT": "300"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max_restarts=0"]
    job = subprocess.Popen([*launcher, "-m", "nasreg", "run", str(ROOT / "specs" / "dgdarts.toml"), "--out", str(two),
                            "-q", "--no-preflight", *sets], cwd=tmp_path, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    metrics = two / "metrics.jsonl"
    while time.monotonic() < deadline and job.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # stage 0, epochs 0 and 1 done
            break
        time.sleep(0.2)
    assert job.poll() is None, "the run ended before it could be killed"
    victims = _descendants(job.pid)  # torchrun starts its workers in sessions of their own
    for pid in [job.pid, *victims]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait()
    while any(Path(f"/proc/{pid}").exists() and _state(pid) not in ("Z", "X") for pid in victims):
        time.sleep(0.1)
    assert (two / "checkpoint.pt").is_file() and not (two / "summary.json").exists()

    resumed = subprocess.run([*launcher, "-m", "nasreg", "resume", str(two), "-q", "--no-preflight"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads((two / "genotype.json").read_text())["cells"] == \
        json.loads((one / "genotype.json").read_text())["cells"]
    _assert_metrics_match(_metrics(one), _metrics(two), ("train_loss", "val_loss", "val_acc"), alphas=False)
