"""tools/anomaly.py --table (issue 29): rows from every trainer's TABLE_ROWS, one table with its
files, the heatmap grid, bad inputs named; and the margins: every trained method beats the
training-free ZeroshotAD on the toy world (here: ToyVisA's test split -> ToyMVTec, seed 1,
zero-shot; AF-CLIP's in tests/trainers/test_afclip_toy.py; the table: docs/anomaly.md)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from dassl_lite.errors import DasslLiteError
from dassl_lite.evaluation.anomaly_maps import GRID_PAD, LINE_HEIGHT
from dassl_lite.protocols.anomaly import main
from dassl_lite.protocols.anomaly_grid import GRID_TILE
from dassl_lite.protocols.anomaly_table import TableRow, group_rows, select_rows, table_rows
from dassl_lite.registry import Registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRECTION = "toy_visa -> toy_mvtec"

# Trainers with nothing to learn: the baseline and the comparison's training-free rows.
TRAINING_FREE = {"ZeroshotAD", "WinCLIP"}
# Trained methods whose margins over ZeroshotAD a test with their full toy run asserts already.
ASSERTED_ELSEWHERE = {"AFCLIP": ("tests/trainers/test_afclip_toy.py",
                                 "test_zero_shot_beats_zeroshotad_by_margins")}
# The other trained methods: shortened (ToyVisA's test split is 16 steps an epoch) and the
# margins they keep over ZeroshotAD there (percentage points; ToyVisA -> ToyMVTec, zero-shot,
# seed 1, where ZeroshotAD scores 46.15 pixel AUROC; APRIL-GAN after 2 epochs 92.44, measured
# on the loaded 2-core machine; docs/anomaly.md).
# AnomalyCLIP: its full toy config (6 epochs): 63.11 pixel AUROC. AdaCLIP: its full toy config
# (1 epoch at batch 1): 91.02 ± 1.08 over seeds 1 2 (docs/anomaly.md, its section).
FAST = {"APRILGAN": ["OPTIM.MAX_EPOCH", "2"], "AnomalyCLIP": [], "AdaCLIP": []}
# APRIL-GAN: pixels only; its zero-shot image score is CLS against the prompt ensemble, which
# training never touches (docs/anomaly.md, "ZeroshotAD against the trained methods").
# AnomalyCLIP: pixels only, its image head does not beat ZeroshotAD (docs/anomaly.md).
MARGINS = {"APRILGAN": {"pixel_auroc": 20.0}, "AnomalyCLIP": {"pixel_auroc": 10.0},
           "AdaCLIP": {"pixel_auroc": 20.0}}


def _argv(root, out, *flags):
    return ["--root", str(root), "--output-root", str(out), "--train-dataset", "toy_visa",
            "--test-datasets", "toy_mvtec", "--one-way", "--seeds", "1", "--launcher",
            "inprocess", *flags]


# ------------------------------------------------------------------ rows and selection
def test_rows_come_from_the_trainers_in_registration_order():
    rows = table_rows()
    labels = [r.label for r in rows]
    assert labels[:2] == ["ZeroshotAD zero-shot", "ZeroshotAD few-shot"]  # the baseline first
    assert labels.index("AF-CLIP zero-shot") < labels.index("APRILGAN zero-shot")
    by_label = {r.label: r for r in rows}
    assert by_label["APRILGAN few-shot"] == TableRow("APRILGAN few-shot", "APRILGAN", "toy", (1,))
    assert by_label["AF-CLIP zero-shot"] == TableRow("AF-CLIP zero-shot", "AFCLIP", "toy", (0,))
    for r in rows:
        assert os.path.isfile(os.path.join(REPO, "configs", "trainers", r.trainer,
                                           r.config + ".yaml")), r
    # rows of one trainer and config share one plan: k = 0 always, the rows' few-shot k added
    groups = group_rows(rows)
    assert ("ZeroshotAD", "toy", [1]) in groups and ("AFCLIP", "toy", [1]) in groups


def test_bad_rows_and_duplicate_labels_are_named():
    reg = Registry("TRAINER")

    class Odd:
        TABLE_ROWS = (("Odd zero-shot", "toy", [0]),)

    reg.register(Odd)
    with pytest.raises(DasslLiteError, match=r"Odd\.TABLE_ROWS: each row must be \(label: str, "
                                             r"config: str, shots: tuple of ints >= 0\).*got "
                                             r"\('Odd zero-shot', 'toy', \[0\]\)"):
        table_rows(reg)
    reg = Registry("TRAINER")

    class A:
        TABLE_ROWS = (("Same", "toy", (0,)),)

    class B:
        TABLE_ROWS = (("Same", "toy", (1,)),)

    reg.register(A)
    reg.register(B)
    with pytest.raises(DasslLiteError, match="'Same' is declared by A and B; labels must be unique"):
        table_rows(reg)


def test_methods_pick_rows_by_label_or_trainer_and_unknown_ones_are_listed():
    rows = table_rows()
    assert [r.label for r in select_rows(rows, ["aprilgan"])] == ["APRILGAN zero-shot",
                                                                 "APRILGAN few-shot"]
    picked = select_rows(rows, ["AF-CLIP few-shot", "ZeroshotAD zero-shot"])
    assert [r.label for r in picked] == ["ZeroshotAD zero-shot", "AF-CLIP few-shot"]  # table order
    with pytest.raises(DasslLiteError) as e:
        select_rows(rows, ["AFCLIP zero shot"])
    assert str(e.value).startswith("Unknown method 'AFCLIP zero shot' in --methods. Row labels: "
                                   "'ZeroshotAD zero-shot', 'ZeroshotAD few-shot', ")
    assert "trainers (all their rows): ZeroshotAD, AFCLIP" in str(e.value)


def test_bad_command_lines_exit_2_with_the_reason(tmp_path, capsys):
    def err(*argv):
        assert main(list(argv), REPO) == 2
        return capsys.readouterr().err.strip()

    assert err("--table", "--root", str(tmp_path / "none")) == (
        f"error: --root {tmp_path / 'none'} does not exist; build it with: python "
        f"tools/make_toy_data.py --root {tmp_path / 'none'} --anomaly")
    assert err("--table", "--root", str(tmp_path)) == (
        f"error: --root {tmp_path} has no toy_mvtec/ (ToyMVTec); build it with: python "
        f"tools/make_toy_data.py --root {tmp_path} --anomaly")
    assert err("--table", "--root", str(tmp_path), "--methods", "WinCLIP++").startswith(
        "error: Unknown method 'WinCLIP++' in --methods. Row labels: ")
    assert err("--table", "--root", str(tmp_path), "--trainer", "AFCLIP", "--shots", "1") == (
        "error: --table takes methods, configs and shots from the trainers' TABLE_ROWS; drop "
        "--trainer and --shots (use --methods to choose rows)")
    assert err("--trainer", "AFCLIP", "--config-file", "toy", "--root", str(tmp_path),
               "--grid", "g.png") == "error: --grid only go with --table"
    assert err("--root", str(tmp_path)) == ("error: --trainer and --config-file are required "
                                            "(or --table for the method table)")


# ------------------------------------------------------------------ one small table, end to end
@pytest.fixture(scope="module")
def zsad_table(toy_anomaly_root, tmp_path_factory):
    """--table --methods "ZeroshotAD zero-shot" ToyVisA -> ToyMVTec, seed 1, with --grid."""
    out = tmp_path_factory.mktemp("table")
    grid = out / "grid.png"
    argv = _argv(toy_anomaly_root, out, "--table", "--methods", "ZeroshotAD zero-shot",
                 "--grid", str(grid), "--grid-images", "1")
    return out, grid, argv


@pytest.mark.slow
def test_table_files_grid_and_skip(zsad_table, capsys):
    out, grid, argv = zsad_table
    assert main(argv, REPO) == 0
    printed = capsys.readouterr().out
    with open(out / "anomaly/toy_visa_to_toy_mvtec/ZeroshotAD/toy/shots_0/seed1/results.json") as f:
        run = json.load(f)
    with open(out / "anomaly" / "table.json") as f:
        table = json.load(f)
    (line,) = table["lines"]
    assert (line["label"], line["trainer"], line["shots"]) == ("ZeroshotAD zero-shot", "ZeroshotAD", 0)
    stats = line["directions"][DIRECTION]
    assert set(stats) == {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap",
                          "pixel_f1max", "pixel_aupro"}
    assert all(stats[m]["mean"] == pytest.approx(run[m]) and stats[m]["std"] == 0 for m in stats)
    assert line["train_s"]["n"] == 1 and line["eval_s"]["mean"] == pytest.approx(run["wall_time_s"], abs=0.01)
    cell = f"{run['pixel_auroc']:.2f} ± 0.00"
    row = next(r for r in printed.splitlines() if r.startswith("| ZeroshotAD zero-shot |"))
    assert row.split("|")[2].strip() == "0" and cell in row
    header = next(r for r in printed.splitlines() if r.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "Method", "k", *(f"toy_visa->toy_mvtec {m}" for m in ("I-AUROC", "I-AP", "I-F1max",
                                                              "P-AUROC", "P-AP", "P-F1max",
                                                              "AUPRO")), "train s", "eval s"]
    md = (out / "anomaly" / "table.md").read_text()
    assert md.startswith("Percent, macro over the target dataset's categories") and row in md
    csv_lines = (out / "anomaly" / "table.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 7 and csv_lines[0].startswith("method,trainer,config,shots,direction,metric,mean,std")
    # the grid: 6 ToyMVTec categories x (1 anomalous + 1 normal) rows; image, mask, 1 method
    img = np.asarray(Image.open(grid).convert("RGB"))
    cell_w, cell_h = GRID_TILE + GRID_PAD, GRID_TILE + GRID_PAD + 2 * LINE_HEIGHT
    assert img.shape == (2 * LINE_HEIGHT + 12 * cell_h + GRID_PAD, 3 * cell_w + GRID_PAD, 3)
    y, x = 2 * LINE_HEIGHT + GRID_PAD, GRID_PAD
    image, mask, heat = (img[y:y + GRID_TILE, x + c * cell_w:x + c * cell_w + GRID_TILE]
                         for c in range(3))
    grey = (mask[..., 0] == mask[..., 1]).all() and (mask[..., 1] == mask[..., 2]).all()
    assert grey and (mask > 200).any() and (mask < 50).mean() > 0.5  # anomalous: a defect mask
    assert np.abs(heat.astype(int) - image.astype(int)).mean() > 10  # the map is overlaid
    # everything finished: skipped, the same table
    assert main(argv, REPO) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    with open(out / "anomaly" / "table.json") as f:
        assert json.load(f)["lines"] == table["lines"]


# ------------------------------------------------------------------ margins over ZeroshotAD
def test_every_trained_method_has_its_margins_asserted():
    trained = {r.trainer for r in table_rows()} - TRAINING_FREE
    assert trained == set(FAST) | set(ASSERTED_ELSEWHERE) and set(FAST) == set(MARGINS), (
        "every trained method with TABLE_ROWS needs FAST (fewer epochs at which it still beats "
        "ZeroshotAD) and MARGINS entries here, or a test of its own named in ASSERTED_ELSEWHERE")
    for path, test in ASSERTED_ELSEWHERE.values():
        with open(os.path.join(REPO, path)) as f:
            assert f"def {test}(" in f.read(), (path, test)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", sorted(FAST))
def test_trained_method_beats_zeroshotad(trainer, zsad_table, toy_anomaly_root, tmp_path):
    out, _, argv = zsad_table
    results = out / "anomaly/toy_visa_to_toy_mvtec/ZeroshotAD/toy/shots_0/seed1/results.json"
    if not results.exists():
        assert main(argv, REPO) == 0
    with open(results) as f:
        base = json.load(f)
    assert main(_argv(toy_anomaly_root, tmp_path, "--trainer", trainer, "--config-file", "toy",
                      *FAST[trainer]), REPO) == 0
    with open(tmp_path / f"anomaly/toy_visa_to_toy_mvtec/{trainer}/toy/shots_0/seed1/results.json") as f:
        trained = json.load(f)
    for metric, margin in MARGINS[trainer].items():
        assert trained[metric] >= base[metric] + margin, (trainer, metric, trained[metric], base[metric])
