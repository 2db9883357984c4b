"""A self-contained HTML report builder: headings, text, tables, inline SVG plots and embedded PNG pictures.

The output is one file with no external resource (style sheet inline, pictures as base64 ``data:`` URIs, plots
as inline ``<svg>``), so it can be mailed or archived with a study. It is also well-formed XML (every element
closed, only XML entities), so tests and scripts can parse it with ``xml.etree``.

Example
-------
>>> report = HtmlReport("Delineation study")
>>> report.heading("Summary")
>>> report.table(["metric", "median"], [["Dice", 0.81]])
>>> html = report.toHtml()
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Sequence
from html import escape

__all__ = ["HtmlReport", "formatCell"]

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px; color: #222;
       line-height: 1.4; padding: 0 16px; }
h1 { font-size: 24px; border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 16px; margin-top: 22px; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f4f8; }
td.text, th.text { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 4px 0; }
figure { display: inline-block; margin: 8px 16px 16px 0; vertical-align: top; }
figcaption { font-size: 12px; color: #555; max-width: 600px; }
.note { background: #f6f8fa; border-left: 4px solid #0072B2; padding: 6px 12px; }
.warning { background: #fff4e5; border-left: 4px solid #D55E00; padding: 6px 12px; }
.muted { color: #777; font-size: 12px; }
"""


def formatCell(value, digits: int = 4) -> str:
    """Cell text: floats to ``digits`` significant figures, None/NaN as "n/a", everything else as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0:
            return "0"  # as 1.0 reads "1" (counts of the marks summary read "0.0000" beside "2")
        if value != 0 and (abs(value) >= 10 ** digits or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 1:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def _isNumber(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class HtmlReport:
    """Collects report parts in order; :meth:`toHtml` returns the complete document."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self.svgCount = 0
        self.pictureCount = 0

    # ---- parts --------------------------------------------------------------------------------------------
    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        level = min(max(int(level), 1), 6)
        idAttribute = f' id="{escape(anchor, quote=True)}"' if anchor else ""
        self._parts.append(f"<h{level}{idAttribute}>{escape(text)}</h{level}>")

    def paragraph(self, text: str, cssClass: str | None = None) -> None:
        classAttribute = f' class="{escape(cssClass, quote=True)}"' if cssClass else ""
        self._parts.append(f"<p{classAttribute}>{escape(text)}</p>")

    def bulletList(self, items: Sequence[str], cssClass: str | None = None) -> None:
        classAttribute = f' class="{escape(cssClass, quote=True)}"' if cssClass else ""
        lines = "".join(f"<li>{escape(str(item))}</li>" for item in items)
        self._parts.append(f"<ul{classAttribute}>{lines}</ul>")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], caption: str | None = None,
              digits: int = 4) -> None:
        """A table; numbers are right-aligned and formatted by :func:`formatCell`, text is left-aligned."""
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{escape(caption)}</caption>")
        textColumns = [not all(_isNumber(row[c]) or row[c] is None for row in rows if c < len(row))
                       for c in range(len(headers))]
        out.append("<thead><tr>" + "".join(
            f'<th class="{"text" if textColumns[c] else "num"}">{escape(str(h))}</th>' for c, h in enumerate(headers))
            + "</tr></thead>")
        out.append("<tbody>")
        for row in rows:
            cells = []
            for c, value in enumerate(row):
                cssClass = "text" if c < len(textColumns) and textColumns[c] else "num"
                cells.append(f'<td class="{cssClass}">{escape(formatCell(value, digits))}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        self._parts.append("".join(out))

    def svg(self, svgText: str, caption: str | None = None) -> None:
        """An inline SVG plot (the text of one ``<svg>`` element, e.g. from :mod:`.svgplots`)."""
        if "<svg" not in svgText:
            raise ValueError("svg() expects the text of an <svg> element")
        figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure class="plot">{svgText}{figcaption}</figure>')
        self.svgCount += 1

    def png(self, pngBytes: bytes, alt: str, caption: str | None = None, widthPx: int | None = None) -> None:
        """An embedded PNG picture (base64 ``data:`` URI)."""
        if not pngBytes.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("png() expects the bytes of a PNG file")
        encoded = base64.b64encode(pngBytes).decode("ascii")
        width = f' width="{int(widthPx)}"' if widthPx else ""
        figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure class="picture"><img src="data:image/png;base64,{encoded}" '
                           f'alt="{escape(alt, quote=True)}"{width}/>{figcaption}</figure>')
        self.pictureCount += 1

    def beginSection(self, cssClass: str = "section") -> None:
        self._parts.append(f'<div class="{escape(cssClass, quote=True)}">')

    def endSection(self) -> None:
        self._parts.append("</div>")

    # ---- output -------------------------------------------------------------------------------------------
    def toHtml(self) -> str:
        body = "\n".join(self._parts)
        return ("<!DOCTYPE html>\n"
                '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head>\n<meta charset="utf-8"/>\n'
                '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
                f"<title>{escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
                f"<h1>{escape(self.title)}</h1>\n{body}\n</body>\n</html>\n")

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(self.toHtml())
