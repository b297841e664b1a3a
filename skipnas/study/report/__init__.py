"""``skipnas report``: one self-contained HTML page about a search study.

Split like Optuna's ``visualization`` package, one module per figure: each has an
``_<figure>_info(study)`` function that reads the study into plain data (dicts, lists, numpy arrays;
tested without plotly) and a ``plot_<figure>(info)`` renderer returning a
``plotly.graph_objects.Figure``. plotly is imported only inside the renderers so ``skipnas --help``
stays fast. :func:`write_report` (in ``page``) joins a short header (study, trial counts, best trial,
baselines against it) and the figures into one HTML file with the plotly library inlined, so the
page opens offline.
"""

from skipnas.study.report._trials import FIGURE_TITLES
from skipnas.study.report.history import plot_history
from skipnas.study.report.importance import plot_importance
from skipnas.study.report.link_frequency import plot_link_frequency
from skipnas.study.report.page import render_report, write_report
from skipnas.study.report.pareto import plot_pareto
from skipnas.study.report.skip_matrices import plot_skip_matrices

__all__ = [
    "FIGURE_TITLES",
    "plot_history",
    "plot_importance",
    "plot_link_frequency",
    "plot_pareto",
    "plot_skip_matrices",
    "render_report",
    "write_report",
]
