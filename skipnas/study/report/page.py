"""The report page: the header and every figure in one HTML file with plotly inlined, written atomically."""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_open
from skipnas.study.confirm import shown_scores
from skipnas.study.report._trials import FIGURE_TITLES
from skipnas.study.report.history import _history_info, plot_history
from skipnas.study.report.importance import _importance_info, plot_importance
from skipnas.study.report.link_frequency import MIN_TOP, TOP_FRACTION, _link_frequency_info, plot_link_frequency
from skipnas.study.report.pareto import _pareto_info, plot_pareto
from skipnas.study.report.skip_matrices import _skip_matrices_info, plot_skip_matrices
from skipnas.study.report.summary import _summary_info

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.best td { font-weight: 600; background: #eef4fb; }
section { margin-top: 2.2em; } .note { color: #666; } .empty { font-size: 1.2em; padding: 1em; background: #f6f6f6; }
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


def _fmt_count(value: float | None) -> str:
    if value is None:
        return ""
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def _table(header: list[str] | None, rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are HTML already (escape text before), ``header`` None for key-value tables."""
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _header_html(summary: dict[str, Any], title: str) -> str:
    states = ", ".join(f"{count} {state}" for state, count in summary["states"].items()) or "none"
    objective = summary["objective"] or summary["label"]
    overview = [
        ["study", html.escape(summary["study"])],
        ["objective", f"{html.escape(str(objective))} ({', '.join(summary['directions'])})"],
        ["search space", _fmt(summary["space"])],
        ["data", _fmt(summary["data"])],
        ["trials", f"{summary['trials']} ({states})" + (f"; {summary['duplicates']} reused an earlier result" if summary["duplicates"] else "")],
        ["memory budget", f"{summary['budget_mib']:.0f} MiB" if summary["budget_mib"] is not None else "none recorded"],
        ["training budget", html.escape(summary["training_budget"])],
    ]
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">written by skipnas report on {html.escape(generated)}</p>',
        _table(None, [[html.escape(k), v] for k, v in overview]),
    ]
    best = summary["best"]
    if best is not None:
        genome = best.get("genome") or {}
        skips = "/".join("".join(str(g) for g in row) for row in genome.get("skips", []))
        lines = [
            ["trial", str(best["number"])],
            ["topology", _fmt(best["name"]) + (f" (skips {html.escape(skips)})" if skips else "")],
            [html.escape(summary["label"]), _fmt(best["value"])],
            ["Dice / precision / recall", " / ".join(_fmt(best[k]) for k in ("dice", "precision", "recall"))],
            ["count MAE", _fmt(best["count_mae"])],
            ["predicted peak memory", f"{best['memory_mib']:.1f} MiB" if best["memory_mib"] is not None else ""],
            ["parameters", _fmt_count(best["params"])],
            ["model folder", _fmt(best.get("model_dir"))],
        ]
        parts += [
            "<h2>Best trial</h2>",
            '<p class="meta">Its scores are validation scores: the same images chose its weights, its counting '
            "and its rank, so they are optimistic. The confirmation below, where present, scores on held-out data.</p>",
            _table(None, [[html.escape(k), v] for k, v in lines]),
        ]
    rows = ([best] if best is not None else []) + [row for row in summary["baselines"] if best is None or row["number"] != best["number"]]
    if summary["baselines"]:
        # the objective value is Dice or count MAE, both columns already: show only its distance to the best
        header = ["trial", "topology", "state", f"{summary['label']} vs best", "Dice", "precision", "recall", "count MAE", "memory MiB", "params", "note"]
        is_best = [best is not None and r["number"] == best["number"] for r in rows]
        cells = [
            [
                str(r["number"]),
                ("best: " if top else "") + _fmt(r["name"]),
                r["state"],
                f"{r['delta']:+.4f}" if r["delta"] is not None and not top else "",
                _fmt(r["dice"]), _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["count_mae"]),
                f"{r['memory_mib']:.1f}" if r["memory_mib"] is not None else "",
                _fmt_count(r["params"]),
                f'<span class="note">{html.escape(r["note"])}</span>',
            ]
            for r, top in zip(rows, is_best)
        ]
        classes = ["best" if top else "" for top in is_best]
        parts += ["<h2>Baselines against the best trial</h2>", _table(header, cells, classes)]
    parts += _confirmation_html(summary.get("confirmation"))
    stopped = [("pruned", p) for p in summary["pruned"]] + [("failed", f) for f in summary["failed"]]
    if stopped:
        cells = [[str(row["number"]), _fmt(row["name"]), state, f'<span class="note">{html.escape(row["reason"])}</span>'] for state, row in stopped]
        parts += [
            f"<details><summary>{len(summary['pruned'])} pruned and {len(summary['failed'])} failed trial(s)</summary>",
            _table(["trial", "topology", "state", "reason"], cells),
            "</details>",
        ]
    return "\n".join(parts)


def _confirmation_html(confirmation: dict[str, Any] | None) -> list[str]:
    """The held-out scores of skipnas confirm, or a line saying how to get them."""
    if not confirmation:
        return ["<h2>Held-out confirmation</h2>", '<p class="meta">Not run yet: skipnas confirm --study NAME '
                "trains the top candidates and the baselines again with several seeds and scores them on held-out data.</p>"]
    scores = shown_scores(confirmation)
    header = ["trial", "topology", *(label for _, label in scores)]
    cells = [
        [str(c["trial"]), _fmt(c["topology"]) + (f" (baseline {html.escape(str(c['baseline']))})" if c["baseline"] else "")]
        + [f"{c[k]['mean']:.3f} [{c[k]['low']:.3f}, {c[k]['high']:.3f}]" for k, _ in scores]
        for c in confirmation["candidates"]
    ]
    held_out = html.escape(str(confirmation.get("split", "test")))
    return [
        "<h2>Held-out confirmation</h2>",
        f'<p class="meta">Held out: {held_out}; {confirmation["seeds"]} seed(s) per candidate: mean [95 % interval].</p>',
        _table(header, cells),
        f"<p><b>{html.escape(confirmation['verdict']['text'])}</b></p>",
    ]


def _figures(study: optuna.Study) -> Iterator[tuple[str, str, Any]]:
    """(title, caption, figure) in page order, each figure built when it is reached."""
    yield FIGURE_TITLES["history"], "First objective value of each completed trial; the line is the best so far.", plot_history(_history_info(study))
    yield (
        FIGURE_TITLES["pareto"],
        "Dice (validation) against the cost model's predicted peak training memory; red points form the Pareto front.",
        plot_pareto(_pareto_info(study)),
    )
    yield FIGURE_TITLES["importance"], "Optuna's parameter importance of each link gene (duplicates left out).", plot_importance(_importance_info(study))
    yield (
        FIGURE_TITLES["link_frequency"],
        f"Share of the top trials (best {TOP_FRACTION:.0%}, at least {MIN_TOP}) in which each link is on.",
        plot_link_frequency(_link_frequency_info(study)),
    )
    yield FIGURE_TITLES["skip_matrices"], "A filled cell: encoder level i feeds decoder level j.", plot_skip_matrices(_skip_matrices_info(study))


def _page_parts(study: optuna.Study, title: str | None) -> Iterator[str]:
    summary = _summary_info(study)
    title = title or f"skipnas search report: {study.study_name}"
    yield f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n'
    yield _header_html(summary, title) + "\n"
    if summary["best"] is None:
        yield '<p class="empty">No completed trial yet: there is nothing to plot. Run or resume the search, then write the report again.</p>\n'
    else:
        first = True
        for fig_title, caption, figure in _figures(study):
            # the first figure carries the plotly library inline so the page works offline
            height = f"{figure.layout.height or 450}px"  # a percentage of an auto-height section would collapse
            div = figure.to_html(
                full_html=False, include_plotlyjs=first, default_height=height, config={"displaylogo": False, "responsive": True}
            )
            first = False
            yield f'<section>\n<h2>{html.escape(fig_title)}</h2>\n<p class="note">{html.escape(caption)}</p>\n{div}\n</section>\n'
    yield "</body>\n</html>\n"


def render_report(study: optuna.Study, title: str | None = None) -> str:
    """The report page as one HTML string."""
    return "".join(_page_parts(study, title))


def write_report(study: optuna.Study, out: Path, title: str | None = None) -> Path:
    """Write the report page to ``out`` atomically (a failure leaves any earlier file untouched)."""
    out = Path(out)
    if out.is_dir():
        raise SkipnasError(f"{out}: is a folder; give the report a file name, e.g. --out {out / 'report.html'}")
    try:
        with atomic_open(out, "w") as handle:
            for part in _page_parts(study, title):
                handle.write(part)
    except OSError as exc:
        raise SkipnasError(f"{out}: cannot write the report ({exc.strerror or exc.__class__.__name__}); choose another --out") from None
    return out
