"""What every HTML page of the project is made with: one jinja environment policy and one way to
draw a matplotlib figure as inline SVG. The comparison report, the study page and the monitor
report all use it, so their escaping and their charts behave alike.

Figures are matplotlib ``Figure`` objects, never pyplot's: nothing here touches matplotlib's
global state (backend, rcParams), which a caller's own plots may rely on.

>>> environment = template_environment("backend.ml.monitoring")  # doctest: +SKIP
>>> figure = report_figure(7, 3.2)  # doctest: +SKIP
>>> chart = figure_svg(figure, "confidence")  # doctest: +SKIP
"""

from __future__ import annotations

import io
from collections.abc import Callable


def template_environment(package: str, filters: dict[str, Callable] | None = None):
    """A jinja environment over ``package``'s ``templates/`` folder.

    Every ``{{ value }}`` is escaped (values come from runs and logs), a name the template uses
    but the context lacks is an error rather than an empty string, and block tags leave no blank
    lines behind.
    """
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(loader=PackageLoader(package, "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(filters or {})
    return environment


def report_figure(width: float, height: float):
    """A new figure of ``width`` x ``height`` inches, laid out to fit its labels."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_svg(figure, name: str):
    """The figure as an inline ``<svg>`` element, marked safe for the template.

    Safe because matplotlib writes it and XML-escapes every text it draws (run ids, labels);
    nothing from a run reaches the page through this function unescaped. Text stays text
    (searchable, small), and ``name`` salts the SVG's ids so that charts on one page never share
    one.
    """
    import matplotlib
    from markupsafe import Markup

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"report-{name}"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return Markup(svg[svg.index("<svg"):])  # drop the XML prolog: the SVG sits inside HTML
