"""Evaluation protocols of the prompt-learning papers: base-to-novel, few-shot, cross-dataset and
domain generalization; plus upstream ``parse_test_res.py`` log parsing.

``plans`` turns a protocol into ``tools/train.py`` jobs laid out as upstream's scripts do,
``jobs`` decides from a run directory whether a job is finished, to resume or new, ``runner``
runs them (child processes by default) with progress, ``stats`` / ``summary`` aggregate the
runs' ``results.json`` over seeds and datasets, ``report`` writes JSON/CSV and tables, ``cli``
is the shared command line of the tools.

Submodules are imported where needed (``parse_test_res`` needs only ``logparse`` and ``stats``,
not torch).
"""
