"""Table of faults: each row is a bad command line or a damaged file, the exit status and the
exact words its error must contain. All rows run tools/train.py's main in-process.

Every row must fail on stderr with ``error:`` and no traceback (argparse's own usage errors
excepted, which print ``usage:``).
"""
import functools
import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from .conftest import FIX, run_main, tiny_argv

TOY_CLIP_ARGS = ["INPUT.SIZE", "(32, 32)", "TRAINER.COOP.PREC", "fp32", "OPTIM.MAX_EPOCH", "1",
                 "DATALOADER.NUM_WORKERS", "0"]


class Ctx:
    """What a row builds its command line from: paths and small file factories."""

    def __init__(self, tmp_path, tiny_root):
        self.tmp, self.tiny_root, self.out = tmp_path, tiny_root, tmp_path / "out"

    @functools.cached_property
    def root(self):
        """A private copy of the TinyColors root (for rows that damage files)."""
        root = self.tmp / "data"
        shutil.copytree(self.tiny_root, root)
        return root

    @property
    def split(self):
        return self.root / "tiny_colors" / "split_zhou_TinyColors.json"

    def tiny(self, *extra, root=None, trainer="TinyNet"):
        return tiny_argv(root or self.tiny_root, self.out, *extra, trainer=trainer)

    def damaged(self, *extra):
        return tiny_argv(self.root, self.out, *extra)

    def file(self, name, content):
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def clip(self, backbone, *extra):
        return ["--import", os.path.join(FIX, "tiny_world.py"), "--trainer", "CoOp",
                "--root", self.tiny_root, "--output-dir", self.out,
                "--dataset-config-file", os.path.join(FIX, "tiny_dataset.yaml"),
                *TOY_CLIP_ARGS, "MODEL.BACKBONE.NAME", backbone, *extra]

    def edit_split(self, edit):
        data = json.loads(self.split.read_text())
        self.split.write_text(json.dumps(edit(data)))
        return self.damaged()

    def run_dir(self, changes, pointer="model.pth.tar-1"):
        """A run directory whose config.yaml is this row's config with ``changes`` applied."""
        from dassl_lite.cli import build_parser, setup_cfg

        cfg = setup_cfg(build_parser().parse_args([str(a) for a in self.tiny()]))
        data = yaml.safe_load(cfg.dump())
        for key, value in changes.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        run = self.tmp / "old_run"
        (run / "model").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(data))
        (run / "model" / "checkpoint").write_text(pointer + "\n")
        return run

    def image(self, index, array):
        """Replace train image ``index`` of the split by ``array`` (written as TIFF bytes)."""
        rel = json.loads(self.split.read_text())["train"][index][0]
        path = self.root / "tiny_colors" / "images" / rel
        Image.fromarray(array).save(path, format="TIFF")
        return self.damaged("OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.SAMPLER",
                            "SequentialSampler")


def _text_as_image(c):
    rel = json.loads(c.split.read_text())["train"][0][0]
    (c.root / "tiny_colors" / "images" / rel).write_text("not an image")
    return c.damaged("OPTIM.MAX_EPOCH", "1")


# (id, argv builder, exit status, words the error must contain)
ROWS = [
    # ---- flags that would be ignored or contradict each other
    ("load-epoch-while-training", lambda c: c.tiny("--load-epoch", "3"), 2,
     "error: --load-epoch 3 only applies with --eval-only --model-dir DIR"),
    ("load-epoch-zero", lambda c: c.tiny("--eval-only", "--model-dir", c.tmp, "--load-epoch", "0"),
     2, "error: --load-epoch must be an epoch number >= 1; got 0"),
    ("no-train-alone", lambda c: c.tiny("--no-train"), 2,
     "error: --no-train without --eval-only would build the trainer and do nothing"),
    ("model-dir-while-training", lambda c: c.tiny("--model-dir", c.tmp), 2,
     "only applies with --eval-only (the run to evaluate)"),
    ("eval-only-with-resume", lambda c: c.tiny("--eval-only", "--resume", c.tmp), 2,
     "continues training and --eval-only does not train"),
    ("trainer-flag-vs-opt", lambda c: c.tiny("TRAINER.NAME", "VPT"), 2,
     "error: --trainer TinyNet and the option TRAINER.NAME VPT disagree; give only one"),
    ("output-dir-flag-vs-opt", lambda c: c.tiny("OUTPUT_DIR", c.tmp / "elsewhere"), 2,
     "and the option OUTPUT_DIR"),
    ("seed-flag-vs-opt", lambda c: c.tiny("SEED", "2"), 2,
     "error: --seed 1 and the option SEED 2 disagree; give only one"),
    ("seed-not-an-int", lambda c: c.tiny("--seed", "abc"), 2,
     "argument --seed: invalid int value: 'abc'"),
    ("no-trainer", lambda c: ["--output-dir", c.out], 2, "error: No trainer given: pass --trainer NAME"),
    ("misspelt-trainer", lambda c: c.tiny(trainer="TinyNett"), 2,
     "error: No trainer 'TinyNett' in TRAINER registry. Did you mean 'TinyNet'?"),
    ("eval-only-without-model-dir", lambda c: c.tiny("--eval-only"), 2,
     "--eval-only with TinyNet needs --model-dir DIR"),
    ("import-missing-file", lambda c: ["--import", "nope/missing.py", "--trainer", "TinyNet"], 2,
     "error: --import 'nope/missing.py': no such file"),
    # ---- config files and options
    ("unknown-key", lambda c: c.tiny("OPTIM.LRR", "0.1"), 2,
     "error: Unknown config key 'OPTIM.LRR' in command-line options. Did you mean 'OPTIM.LR'?"),
    ("odd-opts", lambda c: c.tiny("OPTIM.LR"), 2,
     "must be KEY VALUE pairs; got an odd number of items"),
    ("wrong-type", lambda c: c.tiny("OPTIM.MAX_EPOCH", "abc"), 2,
     "error: Cannot merge command-line options"),
    ("config-file-missing", lambda c: c.tiny("--config-file", c.tmp / "none.yaml"), 2,
     "none.yaml does not exist; no bundled config has a similar name (all of them: "
     "--list-configs [TRAINER])"),
    ("config-file-bad-yaml", lambda c: c.tiny("--config-file", c.file("b.yaml", "OPTIM: [1,")), 2,
     "is not valid YAML"),
    ("config-file-not-mapping", lambda c: c.tiny("--config-file", c.file("l.yaml", "- 1\n- 2\n")),
     2, "must hold a mapping; got list"),
    # ---- every choice against its choices
    ("final-model-best", lambda c: c.tiny("TEST.FINAL_MODEL", "best"), 2,
     "error: TEST.FINAL_MODEL must be one of last_step, best_val; got 'best'"),
    ("test-split-train", lambda c: c.tiny("TEST.SPLIT", "train"), 2,
     "error: TEST.SPLIT must be one of test, val; got 'train'"),
    ("subsample-novel", lambda c: c.tiny("DATASET.SUBSAMPLE_CLASSES", "novel"), 2,
     "error: DATASET.SUBSAMPLE_CLASSES must be one of all, base, new; got 'novel'"),
    ("interpolation", lambda c: c.tiny("INPUT.INTERPOLATION", "cubic"), 2,
     "error: INPUT.INTERPOLATION must be one of bilinear, bicubic, nearest; got 'cubic'"),
    ("warmup-type", lambda c: c.tiny("OPTIM.WARMUP_TYPE", "lin"), 2,
     "error: OPTIM.WARMUP_TYPE must be one of linear, constant; got 'lin'"),
    ("optimizer-name", lambda c: c.tiny("OPTIM.NAME", "sgdd"), 2,
     "got 'sgdd'. Did you mean 'sgd'?"),
    ("scheduler-name", lambda c: c.tiny("OPTIM.LR_SCHEDULER", "cosin"), 2,
     "error: OPTIM.LR_SCHEDULER must be one of cosine, multi_step, single_step; got 'cosin'"),
    ("sampler-name", lambda c: c.tiny("DATALOADER.TRAIN_X.SAMPLER", "Random"), 2,
     "error: DATALOADER.TRAIN_X.SAMPLER must be one of"),
    ("evaluator-name", lambda c: c.tiny("TEST.EVALUATOR", "Accuracy"), 2,
     "error: TEST.EVALUATOR must be one of"),
    ("transform-name", lambda c: c.tiny("INPUT.TRANSFORMS", "['normalise']"), 2,
     "got 'normalise'. Did you mean 'normalize'?"),
    ("precision", lambda c: c.tiny("TRAINER.TINYNET.PREC", "fp8"), 2,
     "error: TRAINER.TINYNET.PREC must be one of fp16, fp32, amp, bf16; got 'fp8'"),
    # ---- every count against its range
    ("num-shots-negative", lambda c: c.tiny("DATASET.NUM_SHOTS", "-3"), 2,
     "error: DATASET.NUM_SHOTS must be an integer >= 1 or -1 or 0 (images per class; -1 or 0: "
     "all); got -3"),
    ("feature-cache-dtype", lambda c: c.tiny("DATALOADER.FEATURE_CACHE.DTYPE", "fp8"), 2,
     "error: DATALOADER.FEATURE_CACHE.DTYPE must be one of auto, fp16, fp32; got 'fp8'"),
    ("feature-cache-views-negative",
     lambda c: c.tiny("DATALOADER.FEATURE_CACHE.TRAIN_VIEWS", "-1"), 2,
     "error: DATALOADER.FEATURE_CACHE.TRAIN_VIEWS must be an integer >= 0"),
    ("batch-size-zero", lambda c: c.tiny("DATALOADER.TRAIN_X.BATCH_SIZE", "0"), 2,
     "error: DATALOADER.TRAIN_X.BATCH_SIZE must be an integer >= 1; got 0"),
    ("batch-size-negative", lambda c: c.tiny("DATALOADER.TRAIN_X.BATCH_SIZE", "-4"), 2,
     "error: DATALOADER.TRAIN_X.BATCH_SIZE must be an integer >= 1; got -4"),
    ("test-batch-size-zero", lambda c: c.tiny("DATALOADER.TEST.BATCH_SIZE", "0"), 2,
     "error: DATALOADER.TEST.BATCH_SIZE must be an integer >= 1; got 0"),
    ("workers-negative", lambda c: c.tiny("DATALOADER.NUM_WORKERS", "-1"), 2,
     "error: DATALOADER.NUM_WORKERS must be an integer >= 0; got -1"),
    ("k-transforms-zero", lambda c: c.tiny("DATALOADER.K_TRANSFORMS", "0"), 2,
     "error: DATALOADER.K_TRANSFORMS must be an integer >= 1; got 0"),
    ("max-epoch-zero", lambda c: c.tiny("OPTIM.MAX_EPOCH", "0"), 2,
     "error: OPTIM.MAX_EPOCH must be an integer >= 1 (0 would evaluate an untrained model); got 0"),
    ("lr-negative", lambda c: c.tiny("OPTIM.LR", "-0.1"), 2,
     "error: OPTIM.LR must be a number > 0.0; got -0.1"),
    ("weight-decay-negative", lambda c: c.tiny("OPTIM.WEIGHT_DECAY", "-0.5"), 2,
     "error: OPTIM.WEIGHT_DECAY must be a number >= 0.0; got -0.5"),
    ("input-size-zero", lambda c: c.tiny("INPUT.SIZE", "(0, 8)"), 2,
     "error: INPUT.SIZE must be (height, width), two integers >= 1; got (0, 8)"),
    # ---- --resume
    ("resume-missing-dir", lambda c: c.tiny("--resume", c.tmp / "nope"), 2,
     "/nope: no such directory; give the --output-dir of the run to continue"),
    ("resume-empty-dir", lambda c: c.tiny("--resume", c.tmp), 2,
     "no checkpoint to resume from (expected <model>/checkpoint naming model.pth.tar-<epoch>)"),
    ("resume-a-file", lambda c: c.tiny("--resume", c.file("f.txt", "x")), 2,
     "is a file, not a run directory"),
    ("resume-other-trainer", lambda c: c.tiny("--resume", c.run_dir({"TRAINER.NAME": "CoOp"})), 2,
     "its checkpoints were written with another config (TRAINER.NAME: 'CoOp' in the run, "
     "'TinyNet' now)"),
    ("resume-other-shots", lambda c: c.tiny("--resume", c.run_dir({"DATASET.NUM_SHOTS": 2})), 2,
     "(DATASET.NUM_SHOTS: 2 in the run, -1 now)"),
    ("resume-other-model-folders", lambda c: c.tiny("--resume", _foreign_run(c)), 2,
     "it holds checkpoints of prompt_learner, but TinyNet saves model: written by another "
     "trainer?"),
    # ---- split files
    ("split-empty", lambda c: (c.split.write_text(""), c.damaged())[1], 2,
     "split_zhou_TinyColors.json is empty; restore or re-download it"),
    ("split-bad-json", lambda c: (c.split.write_text('{"train": [}'), c.damaged())[1], 2,
     "split_zhou_TinyColors.json is not valid JSON (line 1, column 12: Expecting value)"),
    ("split-two-fields", lambda c: c.edit_split(
        lambda d: {**d, "val": [r[:2] for r in d["val"]]}), 2,
     "'val', entry 0: ['red/6.png', 0] has 2 fields; expected [relative image path, integer "
     "label, class name]"),
    ("split-missing-key", lambda c: c.edit_split(lambda d: {"train": d["train"], "val": d["val"]}),
     2, "must have keys train, val, test; missing test"),
    ("split-not-object", lambda c: c.edit_split(lambda d: d["train"]), 2,
     "must hold an object with keys train, val, test; got a list"),
    ("split-label-string", lambda c: c.edit_split(
        lambda d: {**d, "test": [[r[0], str(r[1]), r[2]] for r in d["test"]]}), 2,
     "'test', entry 0: ['red/8.png', '0', 'red']; expected [relative image path, integer label, "
     "class name] (label >= 0)"),
    # ---- images
    ("image-not-an-image", _text_as_image, 2, "error: Cannot read image"),
    ("image-float-out-of-range", lambda c: c.image(
        0, np.full((8, 8), 3.5, dtype=np.float32)), 2,
     "a float image must hold values in [0, 1]; its values are in [3.5, 3.5]"),
    # ---- checkpoints and backbones
    ("model-dir-without-checkpoints", lambda c: c.tiny("--eval-only", "--model-dir", c.tmp), 2,
     "error: No checkpoint for model 'model' in"),
    ("backbone-text-file", lambda c: c.clip(c.file("clip.pt", "hello world\n")), 2,
     "clip.pt': not a file written by torch.save (unrecognised content)"),
    ("backbone-empty-file", lambda c: c.clip(c.file("clip.pt", b"")), 2,
     "not a file written by torch.save (the file is empty or truncated)"),
    ("backbone-is-a-prompt-checkpoint", lambda c: c.clip(_saved(c, {"ctx": torch.zeros(4, 8)})),
     2, "not an OpenAI-format CLIP state dict"),
    ("backbone-pickled-module", lambda c: c.clip(_saved(c, torch.nn.Linear(2, 2))), 2,
     "saved.pth': it needs torch.nn.modules.linear.Linear, which is not plain data"),
    ("backbone-missing", lambda c: c.clip("ViT-B/61"), 2,
     "'ViT-B/61' is neither a known CLIP model nor an existing checkpoint file"),
    ("output-dir-is-a-file", lambda c: tiny_argv(c.tiny_root, c.file("o.txt", "x")), 2,
     "o.txt is a file; a run writes a folder there"),
]


def _foreign_run(c):
    """A run directory without config.yaml whose checkpoints belong to a CoOp-like trainer."""
    (c.tmp / "foreign" / "prompt_learner").mkdir(parents=True)
    (c.tmp / "foreign" / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    return c.tmp / "foreign"


def _saved(c, obj):
    path = c.tmp / "saved.pth"
    torch.save(obj, path)
    return path


def test_table_has_40_rows_at_least():
    assert len(ROWS) >= 40 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name, build, code, words", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(name, build, code, words, tmp_path, tiny_root):
    r = run_main(build(Ctx(tmp_path, tiny_root)))
    assert r.code == code, (r.code, r.err[-2000:])
    assert words in r.err, r.err[-2000:]
    assert "Traceback" not in r.err and "Traceback" not in r.out
    if "usage:" not in r.err:
        assert r.err.startswith("error: ")
