"""README.md and docs/ against what the code knows, so the documentation cannot go stale.

Checked: the registered trainers and datasets listed on the front page equal the registries;
every ``dassl-*`` command named is an entry point of the package; every config key quoted
(``OPTIM.MAX_EPOCH``, ``TRAINER.COOP.N_CTX``) exists in the default config merged with every
trainer's section, or is allow-listed below with the reason; every project file named
(``tools/*.py``, ``configs/...yaml``, ``tests/...py``, ...) exists; every relative link and its
``#anchor`` resolve.
"""
import glob
import os
import re
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "DATASETS.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
TOPIC_PAGES = ["methods", "anomaly", "protocols", "datasets", "scale-out", "trust", "speed",
               "packaging"]

# Config-like names quoted in the docs that are not keys of dassl_lite's config, and why.
NOT_OUR_KEYS = {
    # KMnP/vpt's own names, in the left column of the mapping table in docs/methods.md
    "SOLVER.BASE_LR": "KMnP/vpt name", "DATA.BATCH_SIZE": "KMnP/vpt name",
    "DATA.FEATURE": "KMnP/vpt name", "DATA.CROPSIZE": "KMnP/vpt name",
    "DATA.CLASS_WEIGHTS_TYPE": "KMnP/vpt name", "MODEL.MODEL_ROOT": "KMnP/vpt name",
    "MODEL.MLP_NUM": "KMnP/vpt name",
    "OPTIM.LRR": "the misspelt key of the example error message (Did you mean 'OPTIM.LR'?)",
}


def read(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def text_of_pages():
    return {page: read(page) for page in PAGES}


def listed(page_text, marker):
    """The comma-separated names between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    m = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", page_text, re.S)
    assert m, f"README.md: no '<!-- {marker} -->' ... '<!-- /{marker} -->' block"
    return [n.strip() for n in m.group(1).replace("\n", " ").split(",") if n.strip()]


def builtin(registry):
    """Names the project's own trainers/datasets register (not the tests' plug-ins), sorted."""
    from dassl_lite.apps import load_builtins

    load_builtins()
    return sorted(n for n, obj in registry.items()
                  if obj.__module__.startswith(("trainers.", "datasets.", "dassl_lite.")))


def test_topic_pages_exist_and_the_front_page_links_each():
    readme = read("README.md")
    for name in TOPIC_PAGES:
        assert os.path.isfile(os.path.join(REPO, "docs", f"{name}.md")), f"docs/{name}.md missing"
        assert f"](docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"


def test_front_page_lists_exactly_the_registered_trainers():
    from dassl_lite.registry import TRAINER_REGISTRY

    readme = read("README.md")
    names = listed(readme, "registered-trainers")
    registered = builtin(TRAINER_REGISTRY)
    assert names == registered, (
        f"README.md's trainer list differs from the registry: missing {sorted(set(registered) - set(names))}, "
        f"not registered {sorted(set(names) - set(registered))} (keep it sorted)")
    assert f"Trainers ({len(registered)};" in readme, "README.md: the trainer count is stale"


def test_front_page_lists_exactly_the_registered_datasets():
    from dassl_lite.registry import DATASET_REGISTRY

    names = listed(read("README.md"), "registered-datasets")
    registered = builtin(DATASET_REGISTRY)
    assert names == registered, (
        f"README.md's dataset list differs from the registry: missing {sorted(set(registered) - set(names))}, "
        f"not registered {sorted(set(names) - set(registered))} (keep it sorted)")


def test_methods_page_names_every_registered_trainer():
    from dassl_lite.registry import TRAINER_REGISTRY

    table = read("docs/methods.md").split("The registered trainers", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`(\w+)`", "\n".join(ln.split("|")[1] for ln in table.splitlines()[2:])))
    assert named == set(builtin(TRAINER_REGISTRY)), (
        f"docs/methods.md's trainer table: missing {sorted(set(builtin(TRAINER_REGISTRY)) - named)}, "
        f"not registered {sorted(named - set(builtin(TRAINER_REGISTRY)))}")


def entry_points():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["scripts"])


def test_every_console_command_named_is_an_entry_point():
    commands = entry_points()
    for page, text in text_of_pages().items():
        for name in set(re.findall(r"(?<![\w/.-])dassl-[a-z][a-z0-9-]*[a-z0-9]", text)):
            assert name in commands, f"{page} names '{name}', not in pyproject.toml's [project.scripts] {sorted(commands)}"
    assert {"dassl-train", "dassl-base2new", "dassl-anomaly"} <= commands


KEY = re.compile(r"(?<![\w.])(?:[A-Z][A-Z0-9_]*\.)+[A-Z][A-Z0-9_]*(?![\w(])")


def quoted_keys(text):
    """Dotted upper-case names: ``OPTIM.LR``, ``TRAINER.COOP.N_CTX``, ``MODEL.PROMPT.*``."""
    return {m.group(0) for m in KEY.finditer(text)}


def test_the_key_pattern_finds_keys_and_skips_file_names():
    found = quoted_keys("set `OPTIM.MAX_EPOCH` and TRAINER.COOP.N_CTX; see DATASETS.md, "
                        "`MODEL.PROMPT.*`, `CLSEMB_*`, torch.optim.SGD, DATASETS.md#tiny")
    assert found == {"OPTIM.MAX_EPOCH", "TRAINER.COOP.N_CTX", "MODEL.PROMPT"}


@pytest.fixture(scope="module")
def config_keys():
    """Every node and leaf of the default config with all trainers' sections, as dotted paths."""
    from dassl_lite.apps import load_builtins
    from dassl_lite.config import apply_config_extenders, get_cfg_default

    load_builtins()
    cfg = apply_config_extenders(get_cfg_default())
    keys = set()

    def walk(node, prefix):
        for k, v in node.items():
            keys.add(prefix + k)
            if isinstance(v, dict):
                walk(v, prefix + k + ".")

    walk(cfg, "")
    return keys


def test_every_config_key_quoted_exists(config_keys):
    unknown = []
    for page, text in text_of_pages().items():
        for key in sorted(quoted_keys(text)):
            if key in config_keys or key in NOT_OUR_KEYS:
                continue
            unknown.append(f"{page}: {key}")
    assert unknown == [], ("config keys quoted in the docs that the merged default config lacks "
                           "(fix the text, or allow-list them in tests/test_docs.py with a reason): "
                           + ", ".join(unknown))
    for key in NOT_OUR_KEYS:
        assert key not in config_keys, f"{key} is a config key now: remove it from NOT_OUR_KEYS"


def test_the_allow_list_is_used():
    """Every allow-listed name still occurs in the docs (a stale entry would hide nothing)."""
    texts = "\n".join(text_of_pages().values())
    for key in NOT_OUR_KEYS:
        assert key in texts, f"NOT_OUR_KEYS: {key} no longer occurs in the docs; remove it"


FILE = re.compile(r"(?<![\w./-])((?:tools|tests|configs|trainers|datasets|dassl_lite|scripts|docs)"
                  r"/[\w./+-]*\.(?:py|yaml|sh|json|pt|md|png))(?![\w/])")


def test_every_project_file_named_exists():
    missing = []
    for page, text in text_of_pages().items():
        for path in sorted(set(FILE.findall(text))):
            if "..." in path:  # a pattern such as configs/.../toy.yaml
                continue
            if not os.path.exists(os.path.join(REPO, path)):
                missing.append(f"{page}: {path}")
    assert missing == [], "files named in the docs that do not exist: " + ", ".join(missing)
    named_tools = set(re.findall(r"tools/(\w+)\.py", "\n".join(text_of_pages().values())))
    assert {"train", "base2new", "anomaly", "benchmark"} <= named_tools


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[`*_]", lambda m: "_" if m.group(0) == "_" else "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(page):
    text = re.sub(r"```.*?```", "", read(page), flags=re.S)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page, text in text_of_pages().items():
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(os.path.join(REPO, resolved)):
                broken.append(f"{page}: {target} (no file {resolved})")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                broken.append(f"{page}: {target} (no heading '#{anchor}' in {resolved})")
    assert broken == [], "broken links: " + "; ".join(broken)


def test_the_slug_rule():
    assert slug("Anomaly detection datasets") == "anomaly-detection-datasets"
    assert slug("Package layout: no top-level `datasets`") == "package-layout-no-top-level-datasets"
    assert slug("The demo (`make demo`)") == "the-demo-make-demo"


def test_published_anomaly_numbers_name_registered_or_coming_trainers():
    """docs/anomaly.md's table of published MVTec AD / VisA numbers: every method of AF-CLIP's
    comparison is there, each row's trainer is registered or marked "(coming ...)" while it is
    not (a mark left on a registered trainer is stale), and each row says it cannot run here."""
    from dassl_lite.registry import TRAINER_REGISTRY

    block = read("docs/anomaly.md").split("<!-- published-numbers -->", 1)[1]
    block = block.split("<!-- /published-numbers -->", 1)[0]
    rows = [ln for ln in block.strip().splitlines() if ln.startswith("|")][2:]
    registered = set(builtin(TRAINER_REGISTRY))
    problems, names = [], []
    for ln in rows:
        cell = ln.split("|")[2].strip()
        found = re.findall(r"`(\w+)`", cell)
        if len(found) != 1:
            problems.append(f"{cell!r}: name one trainer in backticks")
            continue
        names.append(found[0])
        coming = "(coming" in cell
        if coming and found[0] in registered:
            problems.append(f"{found[0]} is registered now: drop its '(coming ...)' mark")
        elif not coming and found[0] not in registered:
            problems.append(f"{found[0]} is not a registered trainer: mark it '(coming, issue N)'")
        if "not runnable here (no weights)" not in ln:
            problems.append(f"{found[0]}: the row must say 'not runnable here (no weights)'")
    assert problems == [], "; ".join(problems)
    assert {"WinCLIP", "APRILGAN", "AnomalyCLIP", "AdaCLIP", "AFCLIP"} <= set(names), names
