"""Miniatures of the benchmark datasets: their real folder layouts, annotation file formats and
class counts, with a few images per class (empty files, or 8x8 PNGs when ``images=True``).

Each ``make_<name>(root, images=False)`` writes the raw download (no split file) under ``root``
and returns the :class:`Mini` the dataset class should read from it. Class names are the real
ones where they are short to list, otherwise a handful of real names among generated ones.
"""
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

PETS = ("Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman "
        "Bombay boxer British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter "
        "german_shorthaired great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon "
        "miniature_pinscher newfoundland Persian pomeranian pug Ragdoll Russian_Blue saint_bernard "
        "samoyed scottish_terrier shiba_inu Siamese Sphynx staffordshire_bull_terrier "
        "wheaten_terrier yorkshire_terrier").split()
DTD = ("banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline "
       "dotted fibrous flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted "
       "lacelike lined marbled matted meshed paisley perforated pitted pleated polka-dotted porous "
       "potholed scaly smeared spiralled sprinkled stained stratified striped studded swirly veined "
       "waffled woven wrinkled zigzagged").split()
EUROSAT = ("AnnualCrop Forest HerbaceousVegetation Highway Industrial Pasture PermanentCrop "
           "Residential River SeaLake").split()
CALTECH = ("accordion airplanes anchor ant BACKGROUND_Google barrel bass beaver binocular bonsai brain "
           "brontosaurus buddha butterfly camera cannon car_side ceiling_fan cellphone chair "
           "chandelier cougar_body cougar_face crab crayfish crocodile crocodile_head cup dalmatian "
           "dollar_bill dolphin dragonfly electric_guitar elephant emu euphonium ewer Faces "
           "Faces_easy ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano "
           "hawksbill headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch "
           "lamp laptop Leopards llama lobster lotus mandolin mayfly menorah metronome minaret "
           "Motorbikes nautilus octopus okapi pagoda panda pigeon pizza platypus pyramid revolver "
           "rhino rooster saxophone schooner scissors scorpion sea_horse snoopy soccer_ball stapler "
           "starfish stegosaurus stop_sign strawberry sunflower tick trilobite umbrella watch "
           "water_lilly wheelchair wild_cat windsor_chair wrench yin_yang").split()
UCF = ("ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch "
       "Basketball BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles "
       "BodyWeightSquats Bowling BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth "
       "CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving Drumming "
       "Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut "
       "Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump HorseRace "
       "HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking "
       "Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars "
       "PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano "
       "PlayingSitar PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps "
       "Rafting RockClimbingIndoor RopeClimbing Rowing SalsaSpin ShavingBeard Shotput "
       "SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings "
       "SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus "
       "TrampolineJumping Typing UnevenBars VolleyballSpiking WalkingWithDog WallPushups "
       "WritingOnBoard YoYo").split()
FOOD = ["apple_pie", "baby_back_ribs", "baklava"] + [f"dish_{i:03d}" for i in range(3, 100)] + ["waffles"]
FLOWERS = {1: "pink primrose", 2: "hard-leaved pocket orchid", 3: "canterbury bells",
           4: "sweet pea", 102: "blackberry lily"}
AIRCRAFT = ["707-320", "727-200", "737-200"] + [f"Variant {i:02d}" for i in range(3, 50)] + [
    "Cessna 172", "F-16A/B"] + [f"Variant {i:02d}" for i in range(52, 99)] + ["Yak-42"]
CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"] + [
    f"Make{i:03d} Model Sedan {1990 + i % 22}" for i in range(2, 195)] + ["smart fortwo Convertible 2012"]
SUN = ["/a/abbey", "/a/airplane_cabin", "/a/apartment_building/outdoor", "/b/bakery/shop"] + [
    f"/m/mini_scene_{i:03d}" for i in range(4, 396)] + ["/y/youth_hostel"]
CUB = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"] + [
    f"{i:03d}.Bird_{i:03d}" for i in range(4, 200)] + ["200.Common_Yellowthroat"]
IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark")] + [
    (f"n02{i:06d}", f"class {i}") for i in range(3, 999)] + [("n15075141", "toilet paper")]


@dataclass
class Mini:
    """What a dataset class should read from a miniature."""

    dataset_dir: str  # absolute folder of the dataset
    num_classes: int
    sizes: Tuple[int, int, int]  # (train, val, test) items
    names: Dict[int, str] = field(default_factory=dict)  # spot checks: label -> class name


def touch(path: str, images: bool, label: int = 0) -> None:
    """An empty file, or an 8x8 PNG (whatever the extension) whose colour encodes ``label``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not images:
        open(path, "wb").close()
        return
    from PIL import Image

    color = ((label * 53) % 256, (label * 97 + 80) % 256, (label * 29 + 160) % 256)
    Image.new("RGB", (8, 8), color).save(path, format="PNG")


def write_lines(path: str, lines: List[str], newline: str = "\n") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write("".join(line + newline for line in lines))


def class_folders(image_dir: str, folders: List[str], per_class: int, images: bool,
                  pattern: str = "{folder}_{i:04d}.jpg") -> None:
    for label, folder in enumerate(folders):
        for i in range(1, per_class + 1):
            touch(os.path.join(image_dir, folder, pattern.format(folder=folder, i=i)), images, label)


# ---------------------------------------------------------------- split-by-folder datasets
# 5 images per class: round(2.5) = 2 train, round(1.0) = 1 val, 2 test.
def make_dtd(root, images=False) -> Mini:
    class_folders(os.path.join(root, "dtd", "images"), DTD, 5, images)
    return Mini(os.path.join(root, "dtd"), 47, (94, 47, 94),
                {0: "banded", 30: "polka-dotted", 46: "zigzagged"})


def make_eurosat(root, images=False) -> Mini:
    class_folders(os.path.join(root, "eurosat", "2750"), EUROSAT, 5, images, "{folder}_{i}.jpg")
    return Mini(os.path.join(root, "eurosat"), 10, (20, 10, 20),
                {0: "Annual Crop Land", 3: "Highway or Road", 9: "Sea or Lake"})


def make_food101(root, images=False) -> Mini:
    class_folders(os.path.join(root, "food-101", "images"), FOOD, 5, images, "{i}00{i}.jpg")
    write_lines(os.path.join(root, "food-101", "meta", "classes.txt"), FOOD)
    return Mini(os.path.join(root, "food-101"), 101, (202, 101, 202),
                {0: "apple_pie", 1: "baby_back_ribs", 100: "waffles"})


def make_caltech101(root, images=False) -> Mini:
    class_folders(os.path.join(root, "caltech-101", "101_ObjectCategories"), CALTECH, 5, images,
                  "image_{i:04d}.jpg")
    # sorted folders, upper case first: Faces, Leopards, Motorbikes, accordion, airplanes, ...
    return Mini(os.path.join(root, "caltech-101"), 100, (200, 100, 200),
                {0: "face", 1: "leopard", 2: "motorbike", 3: "accordion", 4: "airplane", 99: "yin_yang"})


# ---------------------------------------------------------------- annotation-list datasets
def make_oxford_pets(root, images=False) -> Mini:
    """5 trainval (4 train + 1 val) and 2 test images per breed."""
    base = os.path.join(root, "oxford_pets")
    lists = {"trainval": [], "test": []}
    for label, breed in enumerate(PETS):
        species = 1 if breed[0].isupper() else 2  # cats are capitalised
        for i in range(1, 8):
            name = f"{breed}_{i}"
            touch(os.path.join(base, "images", name + ".jpg"), images, label)
            lists["trainval" if i <= 5 else "test"].append(f"{name} {label + 1} {species} {i}")
    for split, lines in lists.items():
        write_lines(os.path.join(base, "annotations", f"{split}.txt"), lines)
    return Mini(base, 37, (148, 37, 74),
                {0: "abyssinian", 1: "american_bulldog", 9: "british_shorthair", 36: "yorkshire_terrier"})


def make_fgvc_aircraft(root, images=False) -> Mini:
    """Two train, one val and one test image per variant in the official split lists."""
    base = os.path.join(root, "fgvc_aircraft")
    write_lines(os.path.join(base, "variants.txt"), AIRCRAFT)
    image_id = 1000000
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        lines = []
        for label, variant in enumerate(AIRCRAFT):
            for _ in range(per_class):
                image_id += 1
                touch(os.path.join(base, "images", f"{image_id:07d}.jpg"), images, label)
                lines.append(f"{image_id:07d} {variant}")
        write_lines(os.path.join(base, f"images_variant_{split}.txt"), lines)
    return Mini(base, 100, (200, 100, 100), {0: "707-320", 50: "Cessna 172", 51: "F-16A/B", 99: "Yak-42"})


def make_sun397(root, images=False) -> Mini:
    """5 training (4 train + 1 val) and 2 testing images per category."""
    base = os.path.join(root, "sun397")
    write_lines(os.path.join(base, "ClassName.txt"), SUN)
    lists = {"Training_01": [], "Testing_01": []}
    for label, category in enumerate(SUN):
        for i in range(7):
            rel = f"{category}/sun_{label:03d}{i}abcdef.jpg"
            touch(os.path.join(base, "SUN397", *rel.strip("/").split("/")), images, label)
            lists["Training_01" if i < 5 else "Testing_01"].append(rel)
    for name, lines in lists.items():
        write_lines(os.path.join(base, f"{name}.txt"), lines)
    return Mini(base, 397, (1588, 397, 794),
                {0: "abbey", 1: "airplane_cabin", 2: "outdoor apartment_building", 3: "shop bakery",
                 396: "youth_hostel"})


def make_ucf101(root, images=False) -> Mini:
    """5 training (4 train + 1 val) and 2 testing videos per action; lists with CRLF line ends."""
    base = os.path.join(root, "ucf101")
    lists = os.path.join(base, "ucfTrainTestlist")
    write_lines(os.path.join(lists, "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(UCF)], "\r\n")
    train, test = [], []
    for label, action in enumerate(UCF):
        folder = "_".join(re.findall(r"[A-Z][^A-Z]*", action))
        for g in range(1, 8):
            video = f"v_{action}_g{g:02d}_c01"
            touch(os.path.join(base, "UCF-101-midframes", folder, video + ".jpg"), images, label)
            (train.append(f"{action}/{video}.avi {label + 1}") if g <= 5
             else test.append(f"{action}/{video}.avi"))
    write_lines(os.path.join(lists, "trainlist01.txt"), train, "\r\n")
    write_lines(os.path.join(lists, "testlist01.txt"), test, "\r\n")
    return Mini(base, 101, (404, 101, 202),
                {0: "Apply_Eye_Makeup", 36: "Handstand_Pushups", 59: "Playing_Daf", 100: "Yo_Yo"})


def make_cub200(root, images=False) -> Mini:
    """6 official train (5 train + 1 val) and 2 test images per species."""
    base = os.path.join(root, "CUB_200_2011")
    rows = {"images": [], "image_class_labels": [], "train_test_split": []}
    image_id = 0
    for label, folder in enumerate(CUB):
        for i in range(8):
            image_id += 1
            rel = f"{folder}/{folder[4:]}_{i:04d}_{image_id}.jpg"
            touch(os.path.join(base, "images", *rel.split("/")), images, label)
            rows["images"].append(f"{image_id} {rel}")
            rows["image_class_labels"].append(f"{image_id} {label + 1}")
            rows["train_test_split"].append(f"{image_id} {int(i < 6)}")
    write_lines(os.path.join(base, "classes.txt"), [f"{i + 1} {c}" for i, c in enumerate(CUB)])
    for name, lines in rows.items():
        write_lines(os.path.join(base, f"{name}.txt"), lines)
    return Mini(base, 200, (1000, 200, 400),
                {0: "Black_footed_Albatross", 2: "Sooty_Albatross", 199: "Common_Yellowthroat"})


# ---------------------------------------------------------------- MATLAB annotations (scipy)
def make_oxford_flowers(root, images=False) -> Mini:
    """5 images per class (2 train, 1 val, 2 test), labels interleaved as in imagelabels.mat."""
    import numpy as np
    from scipy.io import savemat

    base = os.path.join(root, "oxford_flowers")
    labels = [1 + (n % 102) for n in range(5 * 102)]
    for n, label in enumerate(labels):
        touch(os.path.join(base, "jpg", f"image_{n + 1:05d}.jpg"), images, label)
    savemat(os.path.join(base, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    with open(os.path.join(base, "cat_to_name.json"), "w") as f:
        json.dump({str(i): FLOWERS.get(i, f"flower {i}") for i in range(1, 103)}, f)
    return Mini(base, 102, (204, 102, 204),
                {0: "pink primrose", 1: "hard-leaved pocket orchid", 101: "blackberry lily"})


def _car_annotations(labels: List[int]):
    import numpy as np

    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    rows = [(1, 2, 30, 40, label + 1, f"{n + 1:05d}.jpg") for n, label in enumerate(labels)]
    return np.array([rows], dtype=dtype)


def make_stanford_cars(root, images=False) -> Mini:
    """5 train (4 train + 1 val) and 2 test images per model; the devkit's .mat files."""
    import numpy as np
    from scipy.io import savemat

    base = os.path.join(root, "stanford_cars")
    train_labels = [n % 196 for n in range(5 * 196)]
    test_labels = [n % 196 for n in range(2 * 196)]
    for folder, labels in (("cars_train", train_labels), ("cars_test", test_labels)):
        for n, label in enumerate(labels):
            touch(os.path.join(base, folder, f"{n + 1:05d}.jpg"), images, label)
    os.makedirs(os.path.join(base, "devkit"))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = CARS
    savemat(os.path.join(base, "devkit", "cars_meta.mat"), {"class_names": names})
    savemat(os.path.join(base, "devkit", "cars_train_annos.mat"),
            {"annotations": _car_annotations(train_labels)})
    savemat(os.path.join(base, "cars_test_annos_withlabels.mat"),
            {"annotations": _car_annotations(test_labels)})
    return Mini(base, 196, (784, 196, 392),
                {0: "2000 AM General Hummer SUV", 1: "2012 Acura RL Sedan",
                 195: "2012 smart fortwo Convertible"})


# ---------------------------------------------------------------- ImageNet and its variants
def write_classnames(path: str, classes=IMAGENET) -> None:
    write_lines(path, [f"{wnid} {name}" for wnid, name in classes])


def make_imagenet(root, images=False, train_per_class=2, val_per_class=1) -> Mini:
    base = os.path.join(root, "imagenet")
    write_classnames(os.path.join(base, "classnames.txt"))
    for label, (wnid, _) in enumerate(IMAGENET):
        for i in range(train_per_class):
            touch(os.path.join(base, "images", "train", wnid, f"{wnid}_{i}.JPEG"), images, label)
        for i in range(val_per_class):
            name = f"ILSVRC2012_val_{label * val_per_class + i + 1:08d}.JPEG"
            touch(os.path.join(base, "images", "val", wnid, name), images, label)
    return Mini(base, 1000, (1000 * train_per_class, 0, 1000 * val_per_class),
                {0: "tench", 1: "goldfish", 2: "great white shark", 999: "toilet paper"})


def make_imagenetv2(root, images=False) -> Mini:
    base = os.path.join(root, "imagenetv2")
    write_classnames(os.path.join(base, "classnames.txt"))
    for label in range(1000):
        touch(os.path.join(base, "imagenetv2-matched-frequency-format-val", str(label),
                           f"{label:04d}abc.jpeg"), images, label)
    return Mini(base, 1000, (1000, 0, 1000), {0: "tench", 2: "great white shark", 999: "toilet paper"})


def make_imagenet_sketch(root, images=False) -> Mini:
    base = os.path.join(root, "imagenet-sketch")
    write_classnames(os.path.join(base, "classnames.txt"))
    for label, (wnid, _) in enumerate(IMAGENET):
        touch(os.path.join(base, "images", wnid, "sketch_1.JPEG"), images, label)
    return Mini(base, 1000, (1000, 0, 1000), {0: "tench", 999: "toilet paper"})


SUBSET_200 = IMAGENET[1::5]  # 200 classes: goldfish, ..., as ImageNet-A/R hold a subset


def _make_subset(root, dataset_dir, image_dir, images) -> Mini:
    base = os.path.join(root, dataset_dir)
    write_classnames(os.path.join(base, "classnames.txt"))
    write_lines(os.path.join(base, image_dir, "README.txt"), ["The 200 classes of this dataset."])
    for label, (wnid, _) in enumerate(SUBSET_200):
        touch(os.path.join(base, image_dir, wnid, "0.000116_digital clock _ goldfish_0.8.jpg"),
              images, label)
    return Mini(base, 200, (200, 0, 200), {0: "goldfish", 199: SUBSET_200[-1][1]})


def make_imagenet_a(root, images=False) -> Mini:
    return _make_subset(root, "imagenet-adversarial", "imagenet-a", images)


def make_imagenet_r(root, images=False) -> Mini:
    return _make_subset(root, "imagenet-rendition", "imagenet-r", images)


# dataset name -> (builder, needs scipy)
MAKERS = {
    "OxfordPets": (make_oxford_pets, False), "Caltech101": (make_caltech101, False),
    "DescribableTextures": (make_dtd, False), "EuroSAT": (make_eurosat, False),
    "Food101": (make_food101, False), "FGVCAircraft": (make_fgvc_aircraft, False),
    "SUN397": (make_sun397, False), "UCF101": (make_ucf101, False), "CUB200": (make_cub200, False),
    "OxfordFlowers": (make_oxford_flowers, True), "StanfordCars": (make_stanford_cars, True),
    "ImageNet": (make_imagenet, False), "ImageNetV2": (make_imagenetv2, False),
    "ImageNetSketch": (make_imagenet_sketch, False), "ImageNetA": (make_imagenet_a, False),
    "ImageNetR": (make_imagenet_r, False),
}
