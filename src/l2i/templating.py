"""The jinja2 environment of l2i's HTML pages (templates under ``l2i/templates/``, package data).

Autoescape is on for every template (``.j2``), undefined names are errors. Filters: ``url``
(percent-encode a relative link), ``num`` (a table number: two decimals, ``n/a`` for NaN, a
dash for None; see :func:`fmt_num`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any
from urllib.parse import quote


def fmt_num(v: Any) -> Any:
    """A table cell: floats with two decimals (no ``-0.00``), ``n/a`` for NaN, ``&ndash;`` for
    None, anything else as text (escaped by the template)."""
    from markupsafe import Markup

    if v is None:
        return Markup("&ndash;")
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v + 0.0:.2f}".replace("-0.00", "0.00")
    return str(v)


@lru_cache(maxsize=1)
def environment() -> Any:
    """The shared ``jinja2.Environment``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("l2i", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"],
                                                                 default_for_string=True),
                             undefined=jinja2.StrictUndefined)
    env.filters["url"] = lambda p: quote(str(p))
    env.filters["num"] = fmt_num
    return env


def render(template: str, **context: Any) -> str:
    """Render ``l2i/templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


__all__ = ["environment", "fmt_num", "render"]
