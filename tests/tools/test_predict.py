"""tools/predict.py (``dassl-predict``): a toy CoOp run trained here (1 epoch, 2 shots) predicts
the toy test images; CSV/JSON structure, probabilities summing to 1, top-1 equal to the
evaluator's prediction, our layout and the upstream layout; each bad input refused by name."""
import csv
import json
import os
import shutil

import pytest

from dassl_lite.commands import run_tool
from tests.tool_modules import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_DATASET = os.path.join(REPO, "configs", "datasets", "toy_shapes.yaml")
TOY_COOP = os.path.join(REPO, "configs", "trainers", "CoOp", "toy.yaml")


@pytest.fixture(scope="module")
def run_dir(small_toy_root, tmp_path_factory):
    """A CoOp run on the small ToyShapes (1 epoch, 2 shots), trained through the CLI."""
    import datasets  # noqa: F401  (registers the toy datasets)
    import trainers  # noqa: F401
    from dassl_lite.cli import main

    out = tmp_path_factory.mktemp("predict") / "coop_run"
    status = main(["--trainer", "CoOp", "--root", small_toy_root, "--seed", "1",
                   "--output-dir", str(out), "--dataset-config-file", TOY_DATASET,
                   "--config-file", TOY_COOP, "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2"])
    assert status == 0
    return str(out)


@pytest.fixture(scope="module")
def evaluator_predictions(run_dir, small_toy_root, tmp_path_factory):
    """{test image path: (true label, the evaluator's predicted label)} of the run."""
    from dassl_lite.cli import build_parser, setup_cfg
    from dassl_lite.engine import build_trainer

    out = tmp_path_factory.mktemp("evaluated")
    args = build_parser().parse_args([
        "--eval-only", "--model-dir", run_dir, "--config-file",
        os.path.join(run_dir, "config.yaml"), "--output-dir", str(out),
        "DATALOADER.FEATURE_CACHE.ENABLED", "False"])  # images, as predict reads them
    trainer = build_trainer(setup_cfg(args))
    trainer.load_model(run_dir)
    trainer.test()
    items = trainer.dm.dataset.test  # the test loader's order (not shuffled)
    predicted = trainer.evaluator._y_pred
    assert len(predicted) == len(items) == 128
    return {d.impath: (d.label, p) for d, p in zip(items, predicted)}


def test_training_records_the_class_names(run_dir, small_toy_root):
    with open(os.path.join(run_dir, "classnames.json")) as f:
        names = json.load(f)
    split = json.load(open(os.path.join(small_toy_root, "toy_shapes", "split_zhou_ToyShapes.json")))
    by_label = {label: name for _, label, name in split["train"]}
    assert len(names) == 64 and names == [by_label[i] for i in range(64)]


def test_predict_folder_csv_agrees_with_the_evaluator(run_dir, evaluator_predictions, tmp_path,
                                                      capsys):
    images = os.path.join(os.path.dirname(next(iter(evaluator_predictions))), "..")
    out = tmp_path / "preds.csv"
    assert run_tool("predict", ["--model-dir", run_dir, images, "--topk", "64",
                                "--output", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"Wrote {out} (")
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["image", "rank", "label", "class", "probability"]
    by_image = {}
    for row in rows:
        by_image.setdefault(os.path.realpath(row["image"]), []).append(row)
    expected = {os.path.realpath(p): v for p, v in evaluator_predictions.items()}
    test_images = {p: rows for p, rows in by_image.items() if p in expected}
    assert len(test_images) == 128  # the folder also holds train/val images
    names = json.load(open(os.path.join(run_dir, "classnames.json")))
    correct = 0
    for path, rows in test_images.items():
        assert [int(r["rank"]) for r in rows] == list(range(1, 65))
        probs = [float(r["probability"]) for r in rows]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert probs == sorted(probs, reverse=True)
        assert all(names[int(r["label"])] == r["class"] for r in rows)
        true, predicted = expected[path]
        assert int(rows[0]["label"]) == predicted
        correct += predicted == true
    assert correct / 128 > 0.3  # trained prompts: well above chance (1/64)


def test_predict_json_and_the_upstream_layout(run_dir, evaluator_predictions, small_toy_root,
                                              tmp_path, capsys):
    predict = load_tool("predict")
    chosen = sorted(evaluator_predictions)[:4]
    ours = tmp_path / "ours.json"
    assert predict.main(["--model-dir", run_dir, *chosen, "--output", str(ours)]) == 0
    result = json.load(open(ours))
    assert result["run"] == {"model_dir": run_dir, "trainer": "CoOp", "dataset": "ToyShapes",
                             "epoch": 1, "num_classes": 64}
    assert [p["image"] for p in result["predictions"]] == chosen
    for item in result["predictions"]:
        assert [t["rank"] for t in item["top"]] == [1, 2, 3, 4, 5]  # default top 5
        assert set(item["top"][0]) == {"rank", "label", "class", "probability"}
        assert item["top"][0]["label"] == evaluator_predictions[item["image"]][1]
        assert 0 < sum(t["probability"] for t in item["top"]) <= 1 + 1e-6

    export = load_tool("export_checkpoint")  # upstream CoOp layout: prompt_learner/, no config
    trainer = export.rebuild(run_dir)
    folder, state = export.export(trainer)
    upstream = tmp_path / "upstream_run"
    export.write_upstream_checkpoint(str(upstream), folder, state, 1)
    assert sorted(os.listdir(upstream)) == ["prompt_learner"]
    theirs = tmp_path / "theirs.json"
    assert predict.main(["--model-dir", str(upstream), *chosen, "--output", str(theirs),
                         "--load-epoch", "1", "--trainer", "CoOp", "--config-file", TOY_COOP,
                         "--dataset-config-file", TOY_DATASET, "--root", small_toy_root,
                         "--opts", "DATASET.NUM_SHOTS", "2", "SEED", "1"]) == 0
    other = json.load(open(theirs))["predictions"]
    for a, b in zip(result["predictions"], other):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert [t["probability"] for t in a["top"]] == pytest.approx(
            [t["probability"] for t in b["top"]], abs=1e-5)


def test_recorded_class_names_must_match_the_dataset(run_dir, evaluator_predictions, tmp_path,
                                                     capsys):
    copy = tmp_path / "run_copy"
    shutil.copytree(run_dir, copy)
    names = json.load(open(copy / "classnames.json"))
    names[3] = "teal star"
    (copy / "classnames.json").write_text(json.dumps(names))
    image = sorted(evaluator_predictions)[0]
    assert load_tool("predict").main(["--model-dir", str(copy), image]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The run was trained on other classes than dataset ToyShapes "
                          "gives now (label 3: 'teal star' recorded, ")
    assert str(copy / "classnames.json") in err
    empty = tmp_path / "no_data"
    empty.mkdir()
    assert load_tool("predict").main(["--model-dir", run_dir, image, "--root", str(empty),
                                      "--opts", "DATASET.NAME", "OxfordPets"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot rebuild the run in {run_dir}: its dataset OxfordPets "
                          f"(under {empty}; --root changes it) gives the class names and the "
                          f"model: OxfordPets: dataset folder not found")
    assert load_tool("predict").main(["--model-dir", run_dir, image, "--topk", "65"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --topk must be between 1 and the run's 64 "
                                               "classes; got 65")


def test_bad_inputs_are_named_and_nothing_is_overwritten(tmp_path, capsys):
    """Refused before any run is loaded: the messages name the file or folder."""
    predict = load_tool("predict")
    image = tmp_path / "img.png"
    image.write_bytes(b"not touched")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    existing = tmp_path / "old.csv"
    existing.write_text("keep me")
    run = ["--model-dir", str(tmp_path)]
    cases = [
        ([str(image), "--output", str(image), "--format", "csv"],
         f"error: --output {image} is one of the input images; write the predictions to a new "
         f"file"),
        ([str(tmp_path / "nope.jpg")],
         f"error: Input {tmp_path / 'nope.jpg'} does not exist (expected an image file or a "
         f"folder of images)"),
        ([str(empty)], f"error: Folder {empty} holds no image files (looked for .png, .jpg, "
                       f".jpeg, .bmp, .tif, .tiff, .webp in it and its subfolders)"),
        ([str(image), "--output", str(existing)],
         f"error: --output {existing} exists; pass --overwrite to replace it or choose a new "
         f"name"),
        ([str(image), "--output", str(tmp_path / "p.txt")],
         f"error: Cannot tell the format of --output {tmp_path / 'p.txt'} from its extension "
         f".txt: use .csv or .json, or pass --format csv|json"),
        ([str(image)],
         f"error: {tmp_path} holds no config.yaml (expected the OUTPUT_DIR of tools/train.py). "
         f"For an upstream CoOp/MaPLe run give --trainer, --config-file and "
         f"--dataset-config-file (and the KEY VALUE options) of its training, as for "
         f"upstream's --eval-only"),
    ]
    for argv, message in cases:
        assert predict.main([*run, *argv]) == 2, argv
        assert capsys.readouterr().err.strip() == message
    assert image.read_bytes() == b"not touched" and existing.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["empty", "img.png", "old.csv"]


def test_collect_images_recurses_and_keeps_order(tmp_path):
    from dassl_lite.predict import collect_images

    for rel in ("b/2.PNG", "b/1.jpg", "a/deep/3.jpeg", "a/skip.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    single = str(tmp_path / "b" / "1.jpg")
    got = collect_images([single, str(tmp_path)])
    assert got == [single, str(tmp_path / "a" / "deep" / "3.jpeg"), str(tmp_path / "b" / "2.PNG")]
