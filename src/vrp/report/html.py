"""HTML building blocks of the report: escaping, number formatting, tables, the page shell.

Plain strings and ``html.escape``: every piece of run data (questions, answers, paths,
config values, error messages) goes through :func:`esc` before it reaches the page.
Figures are PNG data URIs, so the page is one self-contained file that works offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

from vrp.report.data import finite

UNDEFINED = "undefined"


def esc(x: object) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape(str(x), quote=True)


def num(x: object, fmt: str = ".3f", missing: str = "—") -> str:
    """A formatted number, or ``missing`` (escaped) for None / NaN / non-numbers."""
    return format(float(x), fmt) if finite(x) else esc(missing)


def with_ci(value: object, lo: object, hi: object, fmt: str = ".3f") -> str:
    """``value [lo, hi]``; the interval is left out when it is not finite."""
    if not finite(value):
        return UNDEFINED
    ci = f" <span class='ci'>[{num(lo, fmt)}, {num(hi, fmt)}]</span>" if finite(lo) and finite(hi) else ""
    return f"{num(value, fmt)}{ci}"


def undefined(reason: str) -> str:
    """The 'undefined' marker with its reason (shown, and as a tooltip)."""
    return f"<span class='undef' title='{esc(reason)}'>{UNDEFINED}</span>"


def code(text: str) -> str:
    return f"<code>{esc(text)}</code>"


def missing(what: str, command: str) -> str:
    """A notice for an absent part of the run and the command that produces it."""
    return f"<p class='missing'>{esc(what)} Make it with {code(command)}, then run {code('vrp report')} again.</p>"


def howto(text: str) -> str:
    """The "how to read this" box of a section (text is trusted, written in this package)."""
    return f"<div class='howto'><strong>How to read this.</strong> {text}</div>"


def img(png: bytes, alt: str, cls: str = "fig") -> str:
    """An embedded PNG figure."""
    data = base64.b64encode(png).decode("ascii")
    return f"<img class='{cls}' alt='{esc(alt)}' src='data:image/png;base64,{data}'>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "", num_cols: Sequence[int] = ()) -> str:
    """A table; header cells are escaped, row cells are trusted HTML (escape data first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(f"<td class='num'>{c}</td>" if i in num_cols else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return (
        f"<div class='tablewrap'><table class='{cls}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def kv_table(pairs: Sequence[tuple[str, object]]) -> str:
    """A two-column key/value table, both escaped."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<div class='tablewrap'><table class='kv'><tbody>{rows}</tbody></table></div>"


@dataclass(frozen=True)
class Section:
    """One section of the page: anchor id, title and body HTML."""

    id: str
    title: str
    body: str


CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#f6f7f9; --accent:#2f5d9e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); }
.layout { display:flex; max-width:1366px; margin:0 auto; }
nav { width:190px; flex:none; position:sticky; top:0; align-self:flex-start; max-height:100vh;
      overflow:auto; padding:20px 12px 20px 16px; font-size:14px; }
nav h2 { font-size:13px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:0 0 8px; }
nav ol { margin:0; padding-left:18px; } nav li { margin:4px 0; }
nav a { color:var(--accent); text-decoration:none; } nav a:hover { text-decoration:underline; }
main { flex:1; min-width:0; padding:16px 20px 40px; }
header.top { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 20px; margin-bottom:16px; }
header.top h1 { font-size:22px; margin:0 0 4px; }
header.top p { margin:2px 0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 20px 16px; margin-bottom:16px; }
section h2 { font-size:19px; margin:10px 0 8px; }
h3 { font-size:16px; margin:16px 0 6px; }
.howto { background:#eef3fb; border-left:4px solid var(--accent); padding:8px 12px; margin:6px 0 12px;
         font-size:14px; color:#2b3445; }
.missing { background:#fff6e5; border-left:4px solid #d08a00; padding:8px 12px; }
.warn { background:#fdecec; border-left:4px solid #c0392b; padding:8px 12px; }
.tablewrap { overflow-x:auto; max-width:100%; }
table { border-collapse:collapse; font-size:13.5px; margin:6px 0 10px; }
th, td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
thead th { background:#f0f2f6; position:sticky; top:0; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.kv { width:100%; table-layout:fixed; }
table.kv th { font-weight:600; color:var(--muted); width:140px; }
table.kv td { overflow-wrap:anywhere; }
.ci { color:var(--muted); }
.undef { color:#a33; font-style:italic; cursor:help; }
.reason { display:block; color:#a33; font-size:12px; }
.what { display:block; color:var(--muted); font-size:12px; max-width:330px; }
table.pred { font-size:13px; } table.pred td, table.pred th { padding:3px 6px; }
.small { font-size:12.5px; color:var(--muted); }
code { background:#f0f2f6; padding:1px 4px; border-radius:3px; font-size:13px; }
img.fig { max-width:100%; height:auto; display:block; margin:6px 0; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:12px; align-items:start; }
.grid2 figure { margin:0; min-width:0; }
figcaption { font-size:13px; color:var(--muted); }
.case { border:1px solid var(--line); border-radius:6px; padding:10px 12px; margin:10px 0;
        display:grid; grid-template-columns:300px 1fr; gap:12px; align-items:start; }
.case h4 { margin:0 0 6px; font-size:15px; }
.case dl { display:grid; grid-template-columns:auto 1fr; gap:2px 10px; margin:0; font-size:13.5px; }
.case dt { color:var(--muted); } .case dd { margin:0; overflow-wrap:anywhere; }
.tag { display:inline-block; padding:0 6px; border-radius:3px; font-size:12px; font-weight:600; }
.tag.wrong { background:#fbe3e3; color:#a12; } .tag.right { background:#e3f4e6; color:#1a6b2e; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
@media (max-width: 900px) { nav { display:none; } .case { grid-template-columns:1fr; } }
"""


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: header, table of contents, sections."""
    toc = "".join(f"<li><a href='#{esc(s.id)}'>{esc(s.title)}</a></li>" for s in sections)
    body = "".join(f"<section id='{esc(s.id)}'><h2>{esc(s.title)}</h2>{s.body}</section>" for s in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><link rel='icon' href='data:,'><style>{CSS}</style></head><body>"
        f"<div class='layout'><nav><h2>Contents</h2><ol>{toc}</ol></nav><main>"
        f"<header class='top'><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"{body}</main></div></body></html>\n"
    )
