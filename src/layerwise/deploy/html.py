"""Self-contained HTML pages: one file that needs nothing but a browser (no script, style sheet,
font or image fetched from anywhere), readable offline and small enough to attach to an e-mail.

The pieces the run report, the run comparison and the runs index share: escaping of everything
that comes from files (:func:`esc`), figures inlined as base64 PNG data URIs (:func:`figure_uri`,
:func:`png_uri`), tables, sections and the page itself with its small inline style sheet
(:func:`page`). The page carries a Content-Security-Policy that allows only inline styles and
``data:`` images: even a piece of text that escaped escaping could not run a script or make a
request.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class Markup(str):
    """A string of HTML that this module's helpers built (or that escaped its own input): passed
    through as it is where anything else is escaped. Joined with ``+``, the other operand is
    escaped unless it is Markup too, and the result stays Markup."""

    def __add__(self, other: Any) -> Markup:
        return Markup(str.__add__(self, esc(other)))

    def __radd__(self, other: Any) -> Markup:
        return Markup(str.__add__(esc(other), self))


def esc(value: Any) -> Markup:
    """``value`` as text safe inside HTML elements and quoted attributes (``<``, ``>``, ``&``,
    ``"`` and ``'`` escaped); a :class:`Markup` passes unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def fmt(value: Any) -> str:
    """A number as people read it in a table (4 significant figures, thousands separated for
    large integers, scientific notation for the very small); anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e7):
            return f"{value:.4g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def png_uri(data: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig: Any, dpi: int = 72) -> str:
    """A matplotlib ``Figure`` (built without pyplot, with a FigureCanvasAgg) as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return png_uri(buf.getvalue())


def new_figure(width: float = 6.0, height: float = 3.6) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches with an Agg canvas, without pyplot
    (no backend machinery or global figure registry: about 2x faster, see train/metrics.py)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def img(uri: str, alt: str, width: int | None = None, cls: str = "", attrs: dict[str, Any] | None = None) -> Markup:
    """An ``<img>`` of a data URI; RuntimeError for any other source (the page stays self-contained)."""
    if not uri.startswith("data:"):
        raise RuntimeError(f"an image of a self-contained page must be a data: URI, not {uri[:40]!r}")
    extra = "".join(f' {k}="{esc(v)}"' for k, v in (attrs or {}).items())
    w = f' width="{int(width)}"' if width else ""
    c = f' class="{esc(cls)}"' if cls else ""
    return Markup(f'<img src="{uri}" alt="{esc(alt)}"{w}{c}{extra}>')


def png_file(path: Path, alt: str, width: int | None = None) -> Markup:
    """A PNG file on disk inlined as an ``<img>``."""
    return img(png_uri(Path(path).read_bytes()), alt, width)


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], cls: str = "",
          cell_attrs: Any = None) -> Markup:
    """An HTML table; cells are escaped (numbers formatted by :func:`fmt`) unless :class:`Markup`.
    ``cell_attrs(i, j, value)`` may return extra attributes (a dict) for body cell (i, j)."""
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        tds = []
        for j, v in enumerate(row):
            a = cell_attrs(i, j, v) if cell_attrs else None
            extra = "".join(f' {k}="{esc(x)}"' for k, x in (a or {}).items())
            num = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            tds.append(f"<td{num}{extra}>{cell(v)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return Markup("".join(out))


def cell(v: Any) -> Markup:
    return v if isinstance(v, Markup) else esc(fmt(v))


def key_values(d: dict[str, Any]) -> Markup:
    """A two-column table of a flat dict (nested values shown as their text)."""
    return table(("key", "value"), [(k, v if isinstance(v, (int, float, str, bool, Markup)) or v is None
                                     else str(v)) for k, v in d.items()], cls="kv")


def pre(text: str) -> Markup:
    return Markup(f"<pre>{esc(text)}</pre>")


def note(text: str, kind: str = "note") -> Markup:
    """A highlighted paragraph (``kind``: note or warn)."""
    return Markup(f'<p class="{esc(kind)}">{esc(text)}</p>')


def section(anchor: str, title: str, *parts: Any) -> Markup:
    """A titled ``<section id=anchor>``; parts are escaped unless :class:`Markup`."""
    body = "\n".join(p if isinstance(p, Markup) else f"<p>{esc(p)}</p>" for p in parts if p)
    return Markup(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>')


# Kept small: the page should stay readable and light without any external resource.
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2329;background:#fff}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}nav{padding:6px 24px;background:#eef2f6;font-size:13px}
nav a{margin-right:12px;color:#1f3b57}main{padding:8px 24px 32px;max-width:1200px}
h2{font-size:17px;border-bottom:1px solid #d5dde5;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #d5dde5;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.cm td{text-align:right;min-width:2.2em}
table.cm th,table.cm td:first-child,table.diff th,table.diff td{max-width:16em;overflow-wrap:anywhere}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;
max-height:420px}.note{background:#f3f6f9;border-left:4px solid #7a8b9c;padding:6px 10px}
.warn{background:#fff4e0;border-left:4px solid #d08a00;padding:6px 10px}.figs{display:flex;flex-wrap:wrap;gap:8px}
.figs img{border:1px solid #e3e8ee;max-width:100%}.ex{display:inline-block;margin:4px;padding:4px;
border:1px solid #e3e8ee;font-size:12px;vertical-align:top;max-width:210px;overflow-wrap:anywhere}
.ex img{image-rendering:pixelated;display:block}.same{color:#7a8b9c}.diff{background:#fff8d6}
"""

# Only inline styles and data: images: nothing is fetched and no script runs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# Marks the pages written here, so that --out replaces a page of ours and never another file.
GENERATOR = '<meta name="generator" content="layerwise">'


def is_our_page(path: Path) -> bool:
    """Whether the file ``path`` is a page this module wrote (its head names layerwise as the
    generator; pages written before that mark existed: a layerwise title)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return head.startswith("<!DOCTYPE html>") and (GENERATOR in head or "<title>layerwise" in head)


def check_out(path: Path, option: str = "--out") -> Path:
    """``path`` when a page may be written there: nothing is there yet, or a page of ours (which
    is replaced). ConfigError for a folder, or a file that is not such a page (a run's
    summary.json, someone's notes): never overwritten."""
    from layerwise.config import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} '{path}' is a folder; give the path of the HTML file to write.")
    if path.exists() and not is_our_page(path):
        raise ConfigError(f"{option} '{path}' is an existing file that is not a layerwise page; it is left as it "
                          f"is. Give the path of a new .html file, or remove that file first.")
    return path


def page(title: str, subtitle: str, sections: Sequence[Markup], nav: Sequence[tuple[str, str]] = ()) -> str:
    """The whole HTML document: title, a line under it, a bar of links to the sections
    (``nav``: (anchor, label) pairs) and the sections."""
    links = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{GENERATOR}'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><header><h1>{esc(title)}</h1>"
            f"<p>{esc(subtitle)}</p></header>" + (f"<nav>{links}</nav>" if links else "")
            + "<main>\n" + "\n".join(sections) + "\n</main></body></html>\n")


def write_page(path: Path, text: str) -> Path:
    """Write the page atomically (a reader never sees half a file; an earlier page is replaced
    only by a whole new one)."""
    from layerwise.train.checkpoint import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))
    return path
