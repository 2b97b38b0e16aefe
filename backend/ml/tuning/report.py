"""The study page: the result on data the search never read, labelled apart from the search's own
optimistic best, the optimisation history, parameter importances and the best trials with links
to their run directories. Charts are matplotlib SVG, as in the comparison report.

>>> write_study_page(summary, Path("experiments/studies/lr.html"),
...                  Path("experiments/runs"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import atomic_write_text
from ..report_kit import figure_svg, report_figure, template_environment
from ..run_directory import RunLayout

# The test metrics a study reports for its confirmation or outer folds.
TEST_METRICS = ("f1_macro", "f1_weighted", "accuracy", "f1_biased")


def _link(page: Path, runs_dir: Path, run_id: str | None) -> str:
    if not run_id:
        return ""
    target = RunLayout(runs_dir / run_id).results
    return Path(os.path.relpath(target.resolve(), page.parent.resolve())).as_posix()


def _history_chart(study: dict, title: str):
    figure = report_figure(5.6, 3.2)
    axes = figure.add_subplot()
    maximize = study["direction"] == "maximize"
    complete = [trial for trial in study["trials"] if trial["state"] == "complete"]
    pruned = [trial for trial in study["trials"] if trial["state"] == "pruned"]
    axes.scatter([trial["number"] for trial in complete], [trial["value"] for trial in complete],
                 s=18, label="completed trial")
    if pruned:
        axes.scatter([trial["number"] for trial in pruned], [0] * len(pruned), marker="x",
                     color="tab:red", s=18, label="pruned (no value)")
    best, running = None, []
    for trial in sorted(complete, key=lambda trial: trial["number"]):
        value = trial["value"]
        best = value if best is None else (max(best, value) if maximize else min(best, value))
        running.append((trial["number"], best))
    if running:
        axes.step(*zip(*running), where="post", color="tab:green", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(study["metric"])
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure_svg(figure, f"history-{title}")


def _importance_chart(importances: dict, title: str):
    if not importances:
        return None
    figure = report_figure(4.2, 0.5 + 0.4 * len(importances))
    axes = figure.add_subplot()
    names = list(importances)[::-1]
    axes.barh(names, [importances[name] for name in names], color="tab:purple")
    axes.set_xlabel("importance (Optuna's default evaluator)")
    axes.set_title(f"parameter importances, {title}", fontsize=10)
    return figure_svg(figure, f"importance-{title}")


def _counts(study: dict) -> str:
    states = [trial["state"] for trial in study["trials"]]
    return ", ".join(f"{states.count(state)} {state}" for state in ("complete", "pruned", "fail")
                     if states.count(state))


def _params(params: dict) -> str:
    return ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())


def _study_view(study: dict, title: str, page: Path, runs_dir: Path) -> dict:
    complete = [trial for trial in study["trials"] if trial["state"] == "complete"]
    ranked = sorted(complete, key=lambda trial: trial["value"],
                    reverse=study["direction"] == "maximize")[:5]
    return {"title": title, "metric": study["metric"], "counts": _counts(study),
            "history": _history_chart(study, title),
            "importances": _importance_chart(study.get("importances", {}), title),
            "best": [{**trial, "params": _params(trial["params"]),
                      "seconds": f"{trial['seconds']:.0f}" if trial["seconds"] else "",
                      "link": _link(page, runs_dir, trial["run_id"])} for trial in ranked]}


def write_study_page(summary: dict, page: Path, runs_dir: Path) -> Path:
    """Render ``summary`` (what ``tune`` writes as JSON) to ``page``; returns its path."""
    context: dict = {"name": page.stem, "kind": summary["kind"], "storage": summary["storage"],
                     "written": summary["written"], "config_name": summary["config_name"],
                     "test_metrics": TEST_METRICS}
    if summary["kind"] == "search":
        study = summary["study"]
        metric = study["metric"].split("/", 1)[1]
        context.update(study=study, best_config=summary["best_config"],
                       metric_name=metric if metric in TEST_METRICS else "f1_macro",
                       confirmation=summary["confirmation"]["test"],
                       counts={"complete": sum(trial["state"] == "complete"
                                               for trial in study["trials"])},
                       runs=[{**run, "link": _link(page, runs_dir, run["run_id"])}
                             for run in summary["confirmation"]["runs"]],
                       studies=[_study_view(study, "search", page, runs_dir)])
    else:
        context.update(nested=summary["test"], folds=[
            {"fold": fold["fold"], "params": _params(fold["study"]["best"]["params"]),
             "value": fold["study"]["best"]["value"], "test": fold["test"],
             "counts": _counts(fold["study"]), "link": _link(page, runs_dir, fold["run_id"])}
            for fold in summary["folds"]], studies=[
            _study_view(fold["study"], f"outer fold {fold['fold']}", page, runs_dir)
            for fold in summary["folds"]])
    environment = template_environment("backend.ml.tuning")
    atomic_write_text(page, environment.get_template("study.html.j2").render(**context))
    return page
