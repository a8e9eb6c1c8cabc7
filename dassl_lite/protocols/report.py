"""Tables (tabulate), CSV rows and files of protocol summaries."""
from __future__ import annotations

import csv
import io
import os
from typing import Dict, List, Optional, Sequence

from ..utils.io import atomic_write_json, atomic_write_text


def fmt_mean(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fmt_stat(stat: Dict) -> str:
    """``mean ± std`` with two decimals, or which seeds are missing."""
    if stat["mean"] is None:
        seeds = ", ".join(str(s) for s in stat.get("missing", []))
        return f"n/a (missing seed {seeds})" if seeds else "n/a"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "github") -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


# ---------------------------------------------------------------------- tables
def base2new_table(summary: Dict, fmt: str = "github") -> str:
    """Dataset | Base | New | HM (mean ± std over seeds), then the average over datasets."""
    rows = [[name, fmt_stat(st["base"]), fmt_stat(st["new"]), fmt_stat(st["hm"])]
            for name, st in summary["datasets"].items()]
    avg = summary["average"]
    rows.append(["Average", fmt_mean(avg["base"]), fmt_mean(avg["new"]), fmt_mean(avg["hm"])])
    return render(["Dataset", "Base", "New", "HM"], rows, fmt)


def comparison_table(summaries: Sequence[Dict], fmt: str = "github") -> str:
    """One row per trainer: Base | New | HM averaged over the datasets, and the jobs' run time."""
    rows = [[s["trainer"], s["config"], fmt_mean(s["average"]["base"]),
             fmt_mean(s["average"]["new"]), fmt_mean(s["average"]["hm"]), fmt_time(s)]
            for s in summaries]
    return render(["Trainer", "Config", "Base", "New", "HM", "Run time"], rows, fmt)


def fmt_time(summary: Dict) -> str:
    """The summed run time of a summary's jobs (``h:mm:ss``), or ``-`` if none was recorded."""
    import datetime

    total = (summary.get("wall_time") or {}).get("total_s")
    return str(datetime.timedelta(seconds=round(total))) if total else "-"


def fewshot_table(summary: Dict, fmt: str = "github") -> str:
    """Dataset | one column per shot count, then the average over datasets."""
    shots = [str(k) for k in summary["shots"]]
    rows = [[name, *(fmt_stat(per[k]) for k in shots)] for name, per in summary["datasets"].items()]
    rows.append(["Average", *(fmt_mean(summary["average"][k]) for k in shots)])
    return render(["Dataset", *(f"{k} shots" for k in shots)], rows, fmt)


def crossdataset_table(summaries: Sequence[Dict], fmt: str = "github") -> str:
    """One row per trainer: source | each target | average over targets (upstream's Table 2)."""
    first = summaries[0]
    targets = list(first["targets"])
    headers = ["Trainer", f"Source: {first['source']['dataset']}", *targets, "Target average"]
    rows = [[s["trainer"], fmt_stat(s["source"]), *(fmt_stat(s["targets"][t]) for t in targets),
             fmt_mean(s["average"])] for s in summaries]
    return render(headers, rows, fmt)


# ---------------------------------------------------------------------- csv
def _stat_row(stat: Dict, **keys) -> Dict:
    row = dict(keys, mean=stat["mean"], std=stat["std"])
    row.update({f"seed{s}": v for s, v in stat["per_seed"].items()})
    row["missing_seeds"] = " ".join(str(s) for s in stat["missing"])
    return row


def csv_rows(summary: Dict) -> List[Dict]:
    """One row per statistic: its keys, mean, std, one column per seed, missing seeds."""
    base = {"trainer": summary["trainer"], "config": summary["config"]}
    protocol = summary["protocol"]
    if protocol == "base2new":
        return [_stat_row(st[m], **base, shots=summary["shots"], dataset=name, metric=m)
                for name, st in summary["datasets"].items() for m in ("base", "new", "hm")]
    if protocol == "fewshot":
        return [_stat_row(st, **base, shots=k, dataset=name)
                for name, per in summary["datasets"].items() for k, st in per.items()]
    rows = [_stat_row(summary["source"], **base, shots=summary["shots"],
                      dataset=summary["source"]["dataset"], role="source")]
    return rows + [_stat_row(st, **base, shots=summary["shots"], dataset=name, role="target")
                   for name, st in summary["targets"].items()]


def to_csv(rows: Sequence[Dict]) -> str:
    fields: List[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_summary(summary: Dict, path_stem: str) -> List[str]:
    """Write ``<path_stem>.json`` and ``<path_stem>.csv``; returns both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
    atomic_write_json(path_stem + ".json", summary)
    atomic_write_text(path_stem + ".csv", to_csv(csv_rows(summary)))
    return [path_stem + ".json", path_stem + ".csv"]
