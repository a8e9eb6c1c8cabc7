"""DistributedDataParallel on CPU with Gloo: two processes started by torch.multiprocessing with
the environment torchrun sets, on the toy world (ToyShapes, ToyCLIP).

One spawn runs every two-process check (starting processes is the expensive part):
* CoOp and MaPLe: one DDP step with batch B per rank vs one single-process step with batch 2B on
  the same images (loss and gradients to 1e-6);
* sharded evaluation over 7 items (DistributedSampler pads one in): each counted exactly once;
* a short DDP training run through ``dassl_lite.cli.main`` with an audit hook recording every
  file each rank opens for writing (only rank 0 may write);
* resuming a single-process run's checkpoint on two processes.
The parent runs the single-process twins and resumes the DDP run's checkpoint on one process.

The training runs are full-batch (the 64 training images in one batch: 32 per rank under DDP)
without random augmentation, so the DDP run and its single-process twin see the same images at
every step whatever the sampler order.
"""
import json
import os
import socket
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # spawns two processes and trains (about 20 s of CPU in all)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORLD = 2
STEP_BATCH = 8  # per rank in the one-step comparison (the twin: 16)
RUN_EPOCHS = 3
RUN_OPTS = ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.5",
            "OPTIM.LR_SCHEDULER", "single_step", "OPTIM.STEPSIZE", "(100,)",  # constant lr
            "OPTIM.WARMUP_EPOCH", "0", "INPUT.TRANSFORMS", "['normalize']",
            "DATALOADER.TEST.BATCH_SIZE", "40"]


def _argv(trainer, root, out, *opts, flags=()):
    return ["--trainer", trainer, "--root", root, "--seed", "1", "--output-dir", out, *flags,
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "toy_shapes.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", trainer, "toy.yaml"), *opts]


def _register():
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401


def _trainer(trainer, root, out, *opts):
    _register()
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.engine import build_trainer
    from dassl_lite.utils import set_random_seed

    cfg = setup_cfg(build_parser().parse_args(_argv(trainer, root, out, *opts)))
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def _one_step(trainer, root, out, batch_size, batch=None):
    """Build ``trainer``, run one step on ``batch`` (default: its loader's first batch); return
    the batch, the loss and the gradients of the trainable parameters."""
    t = _trainer(trainer, root, out, "DATASET.NUM_SHOTS", "2",
                 "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch_size))
    batch = batch or next(iter(t.train_loader_x))
    loss = t.forward_backward(batch)["loss"]
    learner = t._models[t.model_name]
    grads = {n: p.grad.detach().clone() for n, p in learner.named_parameters() if p.requires_grad}
    return {"img": batch["img"], "label": batch["label"], "loss": loss, "grads": grads}


def _run(root, out, epochs, resume=None):
    from dassl_lite.cli import main

    _register()
    argv = _argv("CoOp", root, out, *RUN_OPTS, "OPTIM.MAX_EPOCH", str(epochs),
                 "DATALOADER.TRAIN_X.BATCH_SIZE", str(64 // WORLD if _rank() is not None else 64),
                 flags=["--resume", resume] if resume else [])
    assert main(argv) == 0


def _rank():
    return int(os.environ["RANK"]) if "RANK" in os.environ else None


class _Recorder:
    """Audit hook: paths under ``prefix`` opened for writing, created, renamed or removed."""

    def __init__(self, prefix):
        self.prefix, self.paths = prefix, []

    def __call__(self, event, args):
        if event == "open" and isinstance(args[0], str):
            mode, flags = args[1], args[2] or 0
            writes = (mode and any(c in mode for c in "wax+")) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writes:
                self._note(args[0])
        elif event in ("os.mkdir", "os.rename", "os.remove"):
            for path in args[:2 if event == "os.rename" else 1]:
                if isinstance(path, str):
                    self._note(path)

    def _note(self, path):
        if os.path.abspath(path).startswith(self.prefix):
            self.paths.append(os.path.abspath(path))


def _gather_check():
    """Sharded evaluation of 7 items over 2 ranks (one padded in): every item exactly once."""
    from torch.utils.data import DataLoader, SequentialSampler

    from dassl_lite.engine.distributed import ShardedEvaluation, shard_sampler

    class Recording:
        seen = []

        def process(self, output, labels):
            self.seen += labels.tolist()

    items = [{"index": i, "label": 10 + i} for i in range(7)]
    sampler = shard_sampler(SequentialSampler(items), items, 2, False, 0, "test")
    evaluation = ShardedEvaluation(Recording(), len(items))
    for batch in DataLoader(items, batch_size=2, sampler=sampler):
        evaluation.process(batch["label"].float()[:, None], batch["label"], batch)
    return {"count": evaluation.finish(), "seen": Recording.seen, "shard": list(sampler)}


def _small_split_check():
    """9 training items, batch 8, 2 ranks: each rank's shard (5, one repeated) is one batch."""
    from torch.utils.data import Dataset

    from dassl_lite.config import get_cfg_default
    from dassl_lite.data.data_manager import build_data_loader
    from dassl_lite.engine.distributed import set_sampler_epoch

    class Items(Dataset):
        def __init__(self, cfg, data, transform=None, is_train=False):
            self.data = data

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.data[i]

    cfg = get_cfg_default()
    cfg.DATALOADER.NUM_WORKERS, cfg.SEED = 0, 1
    loader = build_data_loader(cfg, "RandomSampler", list(range(9)), batch_size=8,
                               is_train=True, dataset_wrapper=Items, split_name="train_x")
    epochs = []
    for epoch in range(2):
        set_sampler_epoch(loader, epoch)
        epochs.append([b.tolist() for b in loader])
    return epochs


def _seedless_train_set(root, out):
    """The few-shot training images a SEED -1 run samples on this rank (whose RNGs start
    apart from the other rank's)."""
    from dassl_lite.utils import set_random_seed

    set_random_seed(100 + _rank())
    t = _trainer("CoOp", root, out, "SEED", "-1", "DATASET.NUM_SHOTS", "1")
    return sorted(d.impath for d in t.dm.dataset.train_x)


def _train_fill(root, work, tag, *opts):
    """Build CoOp (2 shots, random flips: exact cached training) with its own cache folder and
    read its training features, which fills them; returns them and the images this process
    encoded."""
    from trainers.prompting import IMAGES_ENCODED

    t = _trainer("CoOp", root, os.path.join(work, f"fill_{tag}"), "DATASET.NUM_SHOTS", "2",
                 "DATALOADER.FEATURE_CACHE.DIR", os.path.join(work, f"cache_{tag}"), *opts)
    before = IMAGES_ENCODED.count
    features = t.train_loader_x.dataset.features.clone()
    return {"features": features, "encoded": IMAGES_ENCODED.count - before}


def _train_fills(root, work, suffix=""):
    return {"flips": _train_fill(root, work, "flips" + suffix),
            "views": _train_fill(root, work, "views" + suffix,
                                 "DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "2")}


def _worker(rank, port, root, work):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    sys.path.insert(0, REPO)
    result = {"steps": {t: _one_step(t, root, os.path.join(work, f"step_{t}"), STEP_BATCH)
                        for t in ("CoOp", "MaPLe")},
              "gather": _gather_check(), "small": _small_split_check(),
              "seedless": _seedless_train_set(root, os.path.join(work, "seedless")),
              "fills": _train_fills(root, work)}
    recorder = _Recorder(os.path.join(work, "ddp"))
    sys.addaudithook(recorder)
    _run(root, os.path.join(work, "ddp"), RUN_EPOCHS)
    _run(root, os.path.join(work, "ddp", "resumed"), RUN_EPOCHS + 1,
         resume=os.path.join(work, "single"))
    result["written"] = sorted(set(recorder.paths))
    torch.save(result, os.path.join(work, f"rank{rank}.pt"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from datasets.toy_world import SplitCounts, make_toy_world

    root = str(tmp_path_factory.mktemp("toy"))
    make_toy_world(root, ["ToyShapes"], counts=SplitCounts(train=2, val=1, test=3))
    return root


@pytest.fixture(scope="module")
def ddp(toy_root, tmp_path_factory):
    """Single-process run, then the two-process checks, then the single-process resume of the
    DDP run; returns the work folder and both ranks' results."""
    import torch.multiprocessing as mp

    work = str(tmp_path_factory.mktemp("ddp"))
    torch.set_num_threads(1)
    _run(toy_root, os.path.join(work, "single"), RUN_EPOCHS)
    mp.spawn(_worker, args=(_free_port(), toy_root, work), nprocs=WORLD, join=True)
    _run(toy_root, os.path.join(work, "single", "resumed"), RUN_EPOCHS + 1,
         resume=os.path.join(work, "ddp"))
    ranks = [torch.load(os.path.join(work, f"rank{r}.pt"), weights_only=False)
             for r in range(WORLD)]
    return work, ranks


def _results(path):
    with open(os.path.join(path, "results.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("trainer", ["CoOp", "MaPLe"])
def test_one_ddp_step_equals_one_step_on_the_joint_batch(ddp, toy_root, tmp_path, trainer):
    _, ranks = ddp
    parts = [r["steps"][trainer] for r in ranks]
    # the two ranks drew disjoint images
    assert parts[0]["img"].shape[0] == parts[1]["img"].shape[0] == STEP_BATCH
    assert not torch.equal(parts[0]["img"], parts[1]["img"])
    joint = {"img": torch.cat([p["img"] for p in parts]),
             "label": torch.cat([p["label"] for p in parts])}
    single = _one_step(trainer, toy_root, str(tmp_path), 2 * STEP_BATCH, batch=joint)
    ddp_loss = sum(p["loss"] for p in parts) / WORLD
    assert abs(single["loss"] - ddp_loss) < 1e-6
    assert set(single["grads"]) == set(parts[0]["grads"]) and single["grads"]
    for name, grad in single["grads"].items():
        for p in parts:  # DDP leaves the averaged gradient on every rank
            torch.testing.assert_close(p["grads"][name], grad, atol=1e-6, rtol=0)


def test_gathered_evaluation_counts_every_image_once(ddp):
    _, ranks = ddp
    assert sorted(ranks[0]["gather"]["shard"] + ranks[1]["gather"]["shard"]) == \
        [0, 0, 1, 2, 3, 4, 5, 6]  # DistributedSampler padded index 0 in
    for r in ranks:
        assert r["gather"]["count"] == 7
        assert r["gather"]["seen"] == [10 + i for i in range(7)]


def test_small_training_split_is_one_smaller_batch_per_rank(ddp):
    _, ranks = ddp
    for epoch in range(2):
        batches = [r["small"][epoch] for r in ranks]
        assert [len(b) for b in batches] == [1, 1] and [len(b[0]) for b in batches] == [5, 5]
        assert set(batches[0][0]) | set(batches[1][0]) == set(range(9))
    assert ranks[0]["small"][0] != ranks[0]["small"][1]  # set_epoch reshuffles


def test_seedless_runs_sample_one_split_for_every_rank(ddp):
    _, ranks = ddp
    assert len(ranks[0]["seedless"]) == 64 and ranks[0]["seedless"] == ranks[1]["seedless"]


def test_ranks_split_the_training_fill_and_read_each_others_shares(ddp, toy_root, tmp_path):
    """Under torchrun the training flip outcomes and views are encoded once in all: each rank
    encodes half, then reads the other half back; every rank ends with all of them, equal to
    what one process fills alone."""
    _, ranks = ddp
    single = _train_fills(toy_root, str(tmp_path), "_single")
    for kind, n in (("flips", 64 * 2 * 2), ("views", 64 * 2 * 2)):  # 64 classes x 2 shots x 2
        assert single[kind]["encoded"] == n
        assert [r["fills"][kind]["encoded"] for r in ranks] == [n // 2, n // 2]
        assert torch.equal(ranks[0]["fills"][kind]["features"], ranks[1]["fills"][kind]["features"])
        torch.testing.assert_close(ranks[0]["fills"][kind]["features"], single[kind]["features"],
                                   rtol=0, atol=1e-5)


def test_ddp_run_matches_its_single_process_twin(ddp):
    work, _ = ddp
    single, two = _results(os.path.join(work, "single")), _results(os.path.join(work, "ddp"))
    assert two["num_samples"] == single["num_samples"] == 32 * 3  # 32 base classes x 3 images
    assert two["epoch"] == single["epoch"] == RUN_EPOCHS
    assert abs(two["accuracy"] - single["accuracy"]) <= 0.5, (two, single)
    # it learned: the loss fell at every full-batch step (DDP ranks log their own half's loss)
    losses = _logged_losses(os.path.join(work, "single"))
    assert len(losses) == RUN_EPOCHS and all(b < a for a, b in zip(losses, losses[1:]))


def _logged_losses(run_dir):
    with open(os.path.join(run_dir, "log.txt")) as f:
        return [float(line.split(" loss ")[1].split()[0]) for line in f if line.startswith("epoch [")]


def test_resume_across_world_sizes(ddp):
    """1 process then 2 (ddp/resumed) and 2 then 1 (single/resumed) end in the same place."""
    from dassl_lite.engine import load_checkpoint

    work, _ = ddp
    a, b = os.path.join(work, "ddp", "resumed"), os.path.join(work, "single", "resumed")
    assert _results(a)["epoch"] == _results(b)["epoch"] == RUN_EPOCHS + 1
    assert abs(_results(a)["accuracy"] - _results(b)["accuracy"]) <= 0.5
    ctx = [load_checkpoint(os.path.join(d, "prompt_learner", f"model.pth.tar-{RUN_EPOCHS + 1}"))
           ["state_dict"]["ctx"] for d in (a, b)]
    torch.testing.assert_close(ctx[0], ctx[1], atol=1e-5, rtol=0)
    before = load_checkpoint(os.path.join(work, "ddp", "prompt_learner",
                                          f"model.pth.tar-{RUN_EPOCHS}"))["state_dict"]["ctx"]
    assert (ctx[0] - before).abs().max() > 1e-3  # the resumed epoch trained
    for d in (a, b):
        with open(os.path.join(d, "log.txt")) as f:
            assert f"(epoch {RUN_EPOCHS})" in f.read()  # "Resuming ... (epoch 3)"


def test_only_rank_zero_writes_files(ddp):
    work, ranks = ddp
    assert ranks[1]["written"] == []
    written = {os.path.relpath(p, os.path.join(work, "ddp")) for p in ranks[0]["written"]}
    for name in ("log.txt", "config.yaml", "results.json", "prompt_learner/checkpoint",
                 "resumed/results.json"):
        assert name in written, sorted(written)
    assert "tensorboard" in written  # rank 0 made it; its event file is the only one there
    assert len(os.listdir(os.path.join(work, "ddp", "tensorboard"))) == 1
    assert not any(p.startswith("log.txt-") for p in os.listdir(os.path.join(work, "ddp")))
